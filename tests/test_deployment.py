"""The production shape: docker-compose.yml, the production settings, the container probes.

No Docker engine runs here: the compose file is checked with `docker compose config` (the
client resolves and validates it without an engine) and, where the compose plugin is missing,
by reading the YAML with the .env.example values substituted the way compose does.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "web", "worker-cpu", "worker-gpu", "beat")
DOCUMENTED_ENV = PROJECT_DIR / ".env.example"


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def compose_plugin() -> str | None:
    """Why `docker compose` cannot run here, or None when it can."""
    if shutil.which("docker") is None:
        return "the docker client is not installed"
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"the docker compose plugin is not installed ({(probe.stderr or probe.stdout).strip()})"
    return None


def compose_config(tmp_path: Path, env_text: str) -> subprocess.CompletedProcess:
    """`docker compose config` on a copy of the compose file with `env_text` as its .env."""
    shutil.copy(PROJECT_DIR / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text(env_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "POSTGRES_", "REDIS_"))}
    return subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


_VARIABLE = re.compile(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}")


def yaml_config(env: dict[str, str]) -> dict:
    """The compose file read as YAML, with ${...} substituted as compose does (for where the
    plugin is missing; YAML merge keys do the `<<: *app` part)."""
    def substitute(match: re.Match) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(arg)
        return arg or ""

    text = (PROJECT_DIR / "docker-compose.yml").read_text().replace("$$", "\0")
    config = yaml.safe_load(_VARIABLE.sub(substitute, text).replace("\0", "$"))
    for service in config["services"].values():
        if service.get("env_file"):  # .env is the env file; `environment` wins over it
            service["environment"] = {**env, **service.get("environment", {})}
    return config


@pytest.fixture(params=["docker compose config", "yaml"])
def config(request, tmp_path) -> dict:
    env_text = DOCUMENTED_ENV.read_text()
    if request.param == "yaml":
        return yaml_config(read_env_file(DOCUMENTED_ENV))
    reason = compose_plugin()
    if reason:
        pytest.skip(reason)
    result = compose_config(tmp_path, env_text)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def mounts(service: dict) -> set[tuple[str, str, bool]]:
    """(volume, path, read only) of a service, from the short or the long volume syntax."""
    out = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            out.add((source, target, mode == ["ro"]))
        else:
            out.add((volume["source"], volume["target"], bool(volume.get("read_only"))))
    return out


def test_compose_declares_the_services_queues_and_health_checks(config):
    services = config["services"]
    assert sorted(services) == ["beat", "migrate", "postgres", "redis", "web", "worker-cpu", "worker-gpu"]
    assert services["postgres"]["image"] == "pgvector/pgvector:pg17"
    assert services["redis"]["image"] == "redis:7-alpine"

    assert services["web"]["command"] == [
        "gunicorn", "cletir_site.wsgi:application", "--bind=0.0.0.0:8000", "--workers=3", "--timeout=300",
        "--access-logfile=-",
    ]
    assert services["worker-cpu"]["command"] == [
        "celery", "-A", "cletir_site", "worker", "-Q", "default", "--concurrency", "2", "--hostname", "cpu@%h",
        "--loglevel", "INFO",
    ]
    gpu = services["worker-gpu"]
    assert gpu["command"] == [
        "celery", "-A", "cletir_site", "worker", "-Q", "search,embed", "--concurrency", "1", "--hostname", "gpu@%h",
        "--loglevel", "INFO",
    ]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    assert gpu["build"]["args"] == {"TORCH_VARIANT": "cuda"}
    assert services["web"]["build"]["args"] == {"TORCH_VARIANT": "cpu"}
    assert (gpu["environment"]["CLETIR_DEVICE"], gpu["environment"]["CLETIR_PROXY_SIZE"]) == ("cuda", "512")
    assert services["beat"]["command"] == [
        "celery", "-A", "cletir_site", "beat", "--loglevel", "INFO", "--schedule", "/tmp/celerybeat-schedule",
    ]
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]

    # `docker compose config` keeps compose's "$$" escape of a literal "$" in its output.
    health = {name: [part.replace("$$", "$") for part in s["healthcheck"]["test"]]
              for name, s in services.items() if "healthcheck" in s}
    assert health == {
        "postgres": ["CMD-SHELL", 'pg_isready -U "$POSTGRES_USER" -d "$POSTGRES_DB"'],
        "redis": ["CMD", "redis-cli", "ping"],
        "web": ["CMD", "python", "-m", "cletir_site.healthcheck", "web"],
        "worker-cpu": ["CMD-SHELL", "celery -A cletir_site inspect ping --destination cpu@$HOSTNAME --timeout 10"],
        "worker-gpu": ["CMD-SHELL", "celery -A cletir_site inspect ping --destination gpu@$HOSTNAME --timeout 10"],
        "beat": ["CMD", "python", "-m", "cletir_site.healthcheck", "broker"],
    }

    assert {"pgdata", "redisdata", "media", "models"} <= set(config["volumes"])
    assert mounts(services["postgres"]) == {("pgdata", "/var/lib/postgresql/data", False)}
    assert mounts(services["redis"]) == {("redisdata", "/data", False)}
    assert mounts(services["web"]) == {("media", "/data/media", False), ("models", "/data/models", False)}
    assert mounts(services["worker-cpu"]) == {("media", "/data/media", False)}
    assert mounts(gpu) == {("media", "/data/media", False), ("models", "/data/models", True)}

    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DATABASE_URL"] == "postgres://cletir:change-me-postgres@postgres:5432/cletir"
        assert env["CELERY_BROKER_URL"] == "redis://:change-me-redis@redis:6379/0"
        assert env["HF_HUB_OFFLINE"] == "1"
    for name in ("web", "worker-cpu", "worker-gpu", "beat"):
        conditions = {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}
        assert conditions == {"postgres": "service_healthy", "redis": "service_healthy",
                              "migrate": "service_completed_successfully"}


def test_compose_config_names_a_missing_secret(tmp_path):
    reason = compose_plugin()
    if reason:
        pytest.skip(reason)
    env_text = "\n".join(line for line in DOCUMENTED_ENV.read_text().splitlines()
                         if not line.startswith("POSTGRES_PASSWORD="))
    result = compose_config(tmp_path, env_text)
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr


# ---------------------------------------------------------------------------- production settings


def production_env(**changes: str | None) -> dict[str, str]:
    """The environment docker-compose.yml gives the app containers, from .env.example."""
    documented = read_env_file(DOCUMENTED_ENV)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "CLETIR_", "CELERY_", "DATABASE_"))}
    env.update(documented)
    env.update(
        DJANGO_SETTINGS_MODULE="cletir_site.settings_production",
        # As docker-compose.yml builds them; nothing is contacted by `check`.
        DATABASE_URL=f"postgres://cletir:{documented['POSTGRES_PASSWORD']}@127.0.0.1:9/cletir",
        CELERY_BROKER_URL=f"redis://:{documented['REDIS_PASSWORD']}@127.0.0.1:9/0",
    )
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=120)


def test_production_settings_pass_the_security_deploy_checks():
    result = manage("check", "--deploy", "--tag", "security", "--fail-level", "WARNING", env=production_env())
    assert (result.returncode, result.stdout.strip(), result.stderr) == (
        0, "System check identified no issues (0 silenced).", "")


def test_production_settings_pass_every_deploy_check():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


def test_production_settings_values():
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; print(json.dumps({"
        "'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS, 'csrf': s.CSRF_TRUSTED_ORIGINS,"
        "'proxy': s.SECURE_PROXY_SSL_HEADER, 'redirect': s.SECURE_SSL_REDIRECT, 'exempt': s.SECURE_REDIRECT_EXEMPT,"
        "'hsts': [s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD],"
        "'cookies': [s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE], 'middleware': s.MIDDLEWARE[:3],"
        "'static': s.STORAGES['staticfiles']['BACKEND']}))"
    )
    env = production_env(DJANGO_DEBUG="1")  # a stray debug flag must not switch production to debug
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "debug": False,
        "hosts": ["photos.example.org", "localhost"],
        "csrf": ["https://photos.example.org"],
        "proxy": ["HTTP_X_FORWARDED_PROTO", "https"],
        "redirect": True,
        "exempt": ["^healthz$"],
        "hsts": [31536000, True, True],
        "cookies": [True, True],
        "middleware": ["django.middleware.security.SecurityMiddleware",
                       "whitenoise.middleware.WhiteNoiseMiddleware",
                       "django.contrib.sessions.middleware.SessionMiddleware"],
        "static": "whitenoise.storage.CompressedManifestStaticFilesStorage",
    }


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "CELERY_BROKER_URL"])
def test_production_settings_refuse_a_missing_variable(missing):
    result = manage("check", env=production_env(**{missing: None}, DJANGO_DEBUG="1"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"cletir: {missing} is not set. The production settings need")


# ---------------------------------------------------------------------------- container probes


class _Health(BaseHTTPRequestHandler):
    report: dict = {}
    status = 200

    def do_GET(self):  # noqa: N802 - the http.server API
        body = json.dumps(self.report).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/healthz"
    server.shutdown()
    server.server_close()


def test_web_probe_needs_database_and_broker_but_not_workers(health_server):
    from cletir_site.healthcheck import check_web

    _Health.status, _Health.report = 503, {"database": "ok", "broker": "ok", "workers": [], "status": "down"}
    assert check_web(health_server) is None
    _Health.report = {"database": "ok", "broker": "down", "workers": []}
    assert check_web(health_server) == "broker down: {'database': 'ok', 'broker': 'down', 'workers': []}"
    assert check_web("http://127.0.0.1:9/healthz").startswith("http://127.0.0.1:9/healthz does not answer: ")
