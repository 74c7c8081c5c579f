"""The run file: how a command finds the server that serves its data folder.

``clipsearch serve`` writes ``server.json`` in the data folder once it listens (its process id,
address and port) and removes it when it stops; ``clipsearch search`` reads it and asks that
server, whose model is loaded and whose index is in memory, instead of loading them itself. A
file left by a server that died names a process that is gone: it is ignored. Standard library
only: the CLI reads it before importing anything heavy.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

RUN_FILE = "server.json"


@dataclass(frozen=True)
class RunningServer:
    """A server that serves this data folder: where to reach it."""

    pid: int
    host: str
    port: int

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "", "::"):  # listening everywhere: loopback reaches it
            host = "127.0.0.1" if host != "::" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def write_run_file(data_dir: str | os.PathLike[str], host: str, port: int) -> Path | None:
    """Record this process as the server of ``data_dir`` (atomically); None if it cannot be
    written (a read-only data folder: commands then search on their own)."""
    folder = Path(data_dir).expanduser()
    path = folder / RUN_FILE
    tmp = folder / f".{RUN_FILE}.{os.getpid()}"
    try:
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": host, "port": int(port)}))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
    return path


def remove_run_file(path: Path | None) -> None:
    """Forget the record, if it is still this process's."""
    if path is None:
        return
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def running_server(data_dir: str | os.PathLike[str]) -> RunningServer | None:
    """The server recorded in ``data_dir``, if its process is alive."""
    path = Path(data_dir).expanduser() / RUN_FILE
    try:
        data = json.loads(path.read_text())
        server = RunningServer(int(data["pid"]), str(data["host"]), int(data["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(server.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return server
