"""Container health probes (docker-compose.yml): exit 0 when healthy, 1 with one line otherwise.

    python -m cletir_site.healthcheck web      # this container's gunicorn answers /healthz
                                               # and reaches the database and the broker
    python -m cletir_site.healthcheck broker   # the broker is reachable (Celery beat)

The web probe ignores the `workers` part of /healthz on purpose: a GPU worker that is still
loading its models, or down, has its own health check, and marking the web process unhealthy
for it would not help anyone.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

WEB_URL = "http://localhost:8000/healthz"


def check_web(url: str = WEB_URL, timeout: float = 8.0) -> str | None:
    """None when the web process answers and its database and broker are up, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()  # 503 still carries the report: read which part is down
    except OSError as exc:
        return f"{url} does not answer: {exc}"
    try:
        report = json.loads(body)
    except ValueError:
        return f"{url} did not return the health report"
    down = [part for part in ("database", "broker") if report.get(part) != "ok"]
    return f"{', '.join(down)} down: {report}" if down else None


def check_broker() -> str | None:
    import django

    django.setup()
    from cletir_site.health import check_broker as probe

    report = probe()
    return None if report["broker"] == "ok" else f"broker down: {report.get('broker_error')}"


def main(argv: list[str]) -> int:
    probes = {"web": check_web, "broker": check_broker}
    if len(argv) != 1 or argv[0] not in probes:
        print(f"usage: python -m cletir_site.healthcheck {{{'|'.join(probes)}}}", file=sys.stderr)
        return 2
    problem = probes[argv[0]]()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
