# syntax=docker/dockerfile:1
# The cletir image: one image for every role (web, workers, beat, manage.py commands).
#
#   docker build -t cletir:cpu .                              # CPU wheels of torch (web, CPU worker)
#   docker build -t cletir:cuda --build-arg TORCH_VARIANT=cuda .   # CUDA build (GPU worker)
#
# TORCH_VARIANT picks where torch comes from: `cpu` takes PyTorch's CPU-only wheels (about
# 1 GB smaller: no CUDA libraries), `cuda` the default PyPI build, which bundles CUDA and
# needs only the NVIDIA driver (and the NVIDIA container toolkit) on the host.
FROM python:3.11-slim

ARG TORCH_VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=cletir_site.settings_production \
    CLETIR_MEDIA_ROOT=/data/media \
    CLETIR_MODEL_DIR=/data/models \
    CLETIR_STATIC_ROOT=/app/static \
    HF_HOME=/data/models/.huggingface \
    HF_HUB_OFFLINE=1

WORKDIR /app

# torch first, from the variant's index, pinned to requirements.txt's versions; the full
# install below then finds it satisfied and keeps it.
COPY requirements.txt .
RUN set -eux; \
    pins="$(grep -E '^(torch|torchvision)==' requirements.txt | tr '\n' ' ')"; \
    case "$TORCH_VARIANT" in \
        cpu) pip install --index-url "$TORCH_CPU_INDEX" $pins ;; \
        cuda) pip install $pins ;; \
        *) echo "TORCH_VARIANT must be cpu or cuda, not $TORCH_VARIANT" >&2; exit 1 ;; \
    esac; \
    pip install -r requirements.txt

COPY . .

# Static files are collected into the image (WhiteNoise serves them). The settings need these
# variables to load; nothing is contacted while collecting.
RUN DJANGO_SECRET_KEY=collectstatic-only-not-a-real-secret-key-0123456789abcdef \
    DJANGO_ALLOWED_HOSTS=localhost \
    DATABASE_URL=postgres://build@localhost/build \
    CELERY_BROKER_URL=redis://localhost:6379/0 \
    python manage.py collectstatic --noinput

# An unprivileged user owns the data folders; named volumes mounted there start with this
# ownership.
RUN useradd --system --uid 10001 --create-home --home-dir /home/cletir cletir \
    && mkdir -p /data/media /data/models \
    && chown -R cletir:cletir /data
USER cletir

EXPOSE 8000
ENTRYPOINT ["/app/cletir_site/docker-entrypoint.sh"]
CMD ["gunicorn", "cletir_site.wsgi:application", "--bind=0.0.0.0:8000"]
