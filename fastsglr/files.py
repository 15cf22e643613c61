"""Small file helpers shared by every writer: a crash never leaves a half-written file behind, and a full disk is
a one-line error naming the fix, found up front where possible."""
import contextlib
import errno
import json
import os
import shutil

from .errors import UsageError

RERUN = "free space, then run the command again"


def resume_fix(run_dir) -> str:
    """What to do after a full disk stopped a training run."""
    return f"free space, then fastsglr train --resume {run_dir} (the last good checkpoint is kept)"


@contextlib.contextmanager
def atomic_file(path, mode, *, fix=RERUN, previous=None):
    """Yield a temp file beside ``path``; once the block is done, fsync it and rename it onto ``path`` (moving the
    current file to ``previous`` first when given). On any failure the temp file is removed and ``path`` is left
    as it was; a full disk (ENOSPC) becomes a one-line UsageError naming ``fix``."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise UsageError(f"no space left on the device writing {path}: {fix}") from None
        raise
    if previous and os.path.exists(path):
        os.replace(path, previous)
    os.replace(tmp, path)


def write_json(path, obj, lines=False, fix=RERUN):
    """Write ``obj`` as JSON (or, with ``lines``, one JSON object per line) atomically: temp file, then rename."""
    with atomic_file(path, "w", fix=fix) as f:
        if lines:
            f.writelines(json.dumps(row) + "\n" for row in obj)
        else:
            json.dump(obj, f, indent=2)


def _size(n) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 2**10:,.0f} kB"


def check_free_space(directory, need_bytes, what):
    """Fail before any work starts when the device that will hold ``directory`` (the nearest existing folder at or
    above it) has less than ``need_bytes`` free: a full disk found mid-way wastes the work done so far."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise UsageError(f"only {_size(free)} free on the device holding {directory}; {what} needs about "
                         f"{_size(need_bytes)}: free space or choose another --out")
