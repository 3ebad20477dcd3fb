"""A real web process for fault tests: gunicorn on the test database, and a client that sends a
request body slowly (so a kill can land while it arrives) and survives the server dying."""
from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from PIL import Image

from tests.conftest import PROJECT_DIR, wait_for

PHOTOS = 40  # in photo_archive()
# What a client sees when the process serving it is killed.
CONNECTION_LOST = (ConnectionError, http.client.HTTPException, socket.timeout)


class WebServer:
    """gunicorn with --preload: the app is imported once, so a killed worker is replaced at once."""

    def __init__(self, env: dict, log_path: Path, workers: int = 1):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "cletir_site.wsgi", "--preload", "--workers", str(workers),
             "--bind", f"127.0.0.1:{self.port}", "--timeout", "120", "--graceful-timeout", "5"],
            cwd=PROJECT_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self._answers, timeout=90, message="the web server to answer")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the web server exited:\n{self.log()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            connection.request("GET", "/api/")
            return connection.getresponse().status in (200, 401, 403)
        except CONNECTION_LOST:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def kill_workers(self) -> None:
        """SIGKILL every process that serves requests (the master starts new ones)."""
        for pid in self.workers():
            os.kill(pid, signal.SIGKILL)
        wait_for(self._answers, timeout=60, message="a new web worker")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def request(self, method: str, path: str, token: str, body: bytes = b"", content_type: str = "",
                seconds_to_send: float = 0.0) -> tuple[int | None, dict | None]:
        """(status, JSON body), or (None, None) when the server died before it answered. The body
        is sent in 64 KB pieces spread over `seconds_to_send`."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.putrequest(method, path)
            connection.putheader("Authorization", f"Token {token}")
            connection.putheader("Content-Length", str(len(body)))
            if content_type:
                connection.putheader("Content-Type", content_type)
            connection.endheaders()
            pieces = [body[at:at + 65536] for at in range(0, len(body), 65536)]
            for piece in pieces:
                connection.send(piece)
                time.sleep(seconds_to_send / len(pieces))
            response = connection.getresponse()
            data = response.read()
        except CONNECTION_LOST:
            return None, None
        finally:
            connection.close()
        try:
            return response.status, json.loads(data) if data else None
        except json.JSONDecodeError:
            raise AssertionError(f"{method} {path} answered {response.status} with a non-JSON body: {data[:300]!r}")


def upload_body(name: str, data: bytes) -> tuple[bytes, str]:
    """A multipart body with one file in the `files` field, and its content type."""
    return encode_multipart(BOUNDARY, {"files": [SimpleUploadedFile(name, data)]}), MULTIPART_CONTENT


def photo_archive() -> bytes:
    """A zip of PHOTOS distinct JPEGs, ~4 MB: more than Django keeps in memory, so it is spooled."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for index in range(PHOTOS):
            pixels = np.random.default_rng(index).integers(0, 255, (240, 320, 3), dtype=np.uint8)
            photo = io.BytesIO()
            Image.fromarray(pixels).save(photo, "JPEG", quality=90)
            zf.writestr(f"trip/{index:03d}.jpg", photo.getvalue())
    return out.getvalue()


def files_under(root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def named_files() -> set[str]:
    from assets.models import Asset, Rendition

    return set(Asset.objects.values_list("file", flat=True)) | set(Rendition.objects.values_list("file", flat=True))
