"""Requests a client gets wrong are logged in one line each, never with a traceback, and a path
traversal under /static/ is a 404 (not a 500) in the demo server and in production alike."""
from __future__ import annotations

import io
import logging
import sys
from wsgiref.util import setup_testing_defaults

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import get_commands, load_command_class

pytestmark = pytest.mark.django_db


@pytest.fixture
def console_log():
    """What the site's console handler (settings.LOGGING) writes, with its filters."""
    # Loading the WSGI application runs django.setup(), which configures logging anew (new
    # handler objects): done first, so the handler swapped here is the one that stays.
    import cletir_site.wsgi  # noqa: F401

    handler = next(h for h in logging.getLogger("django").handlers if isinstance(h, logging.StreamHandler))
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    yield buffer
    handler.setStream(previous or sys.stderr)


def call_wsgi(application, path_info: str) -> tuple[int, bytes]:
    """One GET through a WSGI application as a server hands it over (PATH_INFO percent-decoded)."""
    environ: dict = {"PATH_INFO": path_info, "HTTP_HOST": "127.0.0.1", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    body = b"".join(application(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    return int(statuses[0].split()[0]), body


def test_200_denied_probes_of_proxy_images_log_200_lines_and_no_traceback(client, make_user, console_log):
    client.force_login(make_user("mallory"))  # not staff
    for image_id in range(1, 201):
        assert client.get(f"/proxy-images/{image_id}").status_code == 403

    lines = console_log.getvalue().splitlines()
    assert lines == [f"Forbidden (Permission denied): /proxy-images/{image_id}" for image_id in range(1, 201)]


def test_a_server_error_keeps_its_traceback(console_log):
    logger = logging.getLogger("django.request")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.error("Internal Server Error: /x", exc_info=True, extra={"status_code": 500})
    assert "Traceback" in console_log.getvalue() and "RuntimeError: boom" in console_log.getvalue()


def runserver_application(settings):
    """The WSGI application `manage.py runserver` (the demo's web server) serves, in debug."""
    settings.DEBUG = True
    command = load_command_class(get_commands()["runserver"], "runserver")
    options = vars(command.create_parser("manage.py", "runserver").parse_args([]))
    return command.get_handler(**options)


@pytest.mark.parametrize("path", ["/static/../x", "/static/../../../../etc/passwd", "/static/admin/../../x"])
def test_static_path_traversal_on_the_demo_server_is_a_404_logged_in_one_line(settings, console_log, path):
    # `GET /static/..%2fx`: the server decodes %2f, so the application sees /static/../x.
    status, _ = call_wsgi(runserver_application(settings), path)

    assert status == 404
    assert console_log.getvalue().splitlines() == [f"Not Found: {path}"]


def test_the_demo_server_still_serves_static_files(settings):
    status, body = call_wsgi(runserver_application(settings), "/static/admin/css/base.css")
    assert status == 200 and b"DJANGO Admin styles" in body


def test_static_path_traversal_in_production_is_a_404(settings, console_log, tmp_path):
    # Production: WhiteNoise serves the files it indexed at start (here from the apps' folders,
    # as collectstatic would copy them), never a path it did not index.
    settings.DEBUG = False
    settings.WHITENOISE_AUTOREFRESH = False
    settings.WHITENOISE_USE_FINDERS = True
    settings.STATIC_ROOT = tmp_path
    application = WSGIHandler()

    assert call_wsgi(application, "/static/admin/css/base.css")[0] == 200
    for path in ("/static/../x", "/static/admin/../../x", "/static/admin/css/../../../x"):
        assert call_wsgi(application, path)[0] == 404, path
    assert "Traceback" not in console_log.getvalue()
