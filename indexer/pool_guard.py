"""Decoder processes that die with the process that started them.

``kill -9`` of a worker used to leave its decode pool behind (the forkserver and its decoders,
re-parented to PID 1, ~0.5 GB, alive minutes later): nothing told them their owner was gone.

* The pool's **forkserver** imports this module as a preload module (:class:`DecodePool` sets
  it, and ``CLIPSEARCH_POOL_OWNER`` to its own pid). Imported in the owner's direct child, it
  starts a thread that waits on a pidfd of the owner (``pidfd_open``; polling ``getppid`` where
  that is missing) and ends the forkserver the moment the owner exits, however it exits.
* Each **decoder** (forked by the forkserver) asks the kernel for ``SIGKILL`` when its parent,
  the forkserver, dies (``prctl(PR_SET_PDEATHSIG)``), from the pool's initializer.

The resource tracker exits by itself once the last of them is gone (its pipe closes).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import signal
import threading

OWNER_ENV = "CLIPSEARCH_POOL_OWNER"
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; exit now if it already
    has (re-parented before the call). False where the platform has no ``prctl``."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent or parent == 1:
        os._exit(1)
    return True


def _wait_for_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd: poll that the parent is still ours
        while os.getppid() == pid:
            threading.Event().wait(1.0)
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def exit_with_owner(owner: int) -> None:
    """End this process (``os._exit``) as soon as process ``owner`` exits (a daemon thread)."""

    def watch() -> None:
        with contextlib.suppress(Exception):
            _wait_for_exit(owner)
        os._exit(0)

    threading.Thread(target=watch, name="clipsearch-owner-watch", daemon=True).start()


# Imported as the forkserver's preload module: watch the owner that started it.
_owner = os.environ.get(OWNER_ENV, "")
if _owner.isdigit() and int(_owner) == os.getppid() and int(_owner) != os.getpid():
    exit_with_owner(int(_owner))
