"""Small file-system helpers shared by the commands that write user-visible files."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from pathlib import Path

__all__ = ["default_file_mode", "describe_os_error", "fsync_dir", "pid_alive",
           "sigterm_as_interrupt", "umask"]


def umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status") as f:  # Linux: no window where the umask is 0
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: ``0o666 & ~umask``.

    ``tempfile.mkstemp`` creates 0600 files; a file that ends up under a user-visible name
    gets this mode instead, so a shared dataset is as readable as any other file of its owner.
    """
    return 0o666 & ~umask()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (signal 0 probes, sends nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user
        return True
    except OSError:
        return False
    return True


def fsync_dir(d: Path) -> None:
    """Make renames inside ``d`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def describe_os_error(e: OSError) -> str:
    """One readable line for an OSError: what went wrong and on which file."""
    what = e.strerror or str(e) or type(e).__name__
    if e.errno == errno.ENOSPC and "space" not in what.lower():
        what = f"{what} (no space left on device)"
    name = e.filename if e.filename is not None else None
    return f"{what}: {name}" if name is not None and str(name) not in what else what


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Inside this context SIGTERM (``kill``, job schedulers) raises KeyboardInterrupt like
    Ctrl-C, so the same clean-up runs; yields a list that receives the signal numbers seen.
    A SIGTERM the parent set to be ignored stays ignored; outside the main thread: no-op."""
    seen: list[int] = []
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN):
        yield seen
        return

    def handle(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handle)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, old)
