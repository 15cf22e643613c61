"""One writer per run directory: an advisory ``fcntl`` lock on ``RUN_DIR/.lock``, held for the life of a run.

A second `train` on the same directory (``--resume RUN`` or ``--out RUN --overwrite`` while RUN trains) would
interleave its epochs with the first's and lose them; it gets a one-line error naming the process that holds the
lock. The kernel drops the lock when its holder exits, however it exits (SIGKILL included), so a lock left behind
by a killed run never blocks its resume: only the file stays, and a file without a lock means nothing.
"""

import contextlib
import fcntl
import os

from .errors import UsageError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(run_dir):
    """Hold ``run_dir``'s lock (the folder must exist) for the block; refuse at once when another process has it."""
    path = os.path.join(run_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UsageError(
                f"{run_dir} is being written by another fastsglr process (pid {holder}): wait for it to "
                f"finish or stop it, then run the command again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
