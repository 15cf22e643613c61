"""Small file helpers shared by every writer: a crash never leaves a half-written file behind, and a full disk is
a one-line error naming the fix, found up front where possible."""

import contextlib
import errno
import json
import math
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


def strict_json(obj):
    """``obj`` with every non-finite float replaced by None: JSON has no NaN or Infinity, and strict parsers reject
    Python's bare ``NaN`` (a missing number, such as the corrupted-portion accuracy of a run without label noise)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(path, obj, lines=False, fix=RERUN):
    """Write ``obj`` as strict JSON (or, with ``lines``, one JSON object per line) atomically: temp file, then
    rename. Non-finite numbers are written as null."""
    with atomic_file(path, "w", fix=fix) as f:
        if lines:
            f.writelines(json.dumps(strict_json(row), allow_nan=False) + "\n" for row in obj)
        else:
            json.dump(strict_json(obj), f, indent=2, allow_nan=False)


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
        raise UsageError(
            f"only {_size(free)} free on the device holding {directory}; {what} needs about "
            f"{_size(need_bytes)}: free space or choose another --out"
        )


# What makes a folder a run directory or a data directory (a subset is enough to tell).
RUN_MARKERS = ("config.json", "last.pt", "last.prev.pt", "best.pt", "final.pt", "metrics.jsonl")
DATA_MARKERS = ("meta.json", "train.beton", "test.beton")


def holds(directory) -> str | None:
    """'a training run' or 'a data directory' when ``directory`` holds one, else None."""
    if any(os.path.exists(os.path.join(directory, f)) for f in RUN_MARKERS):
        return "a training run"
    if any(os.path.exists(os.path.join(directory, f)) for f in DATA_MARKERS):
        return "a data directory"
    return None


def _is_json_with(path, keys) -> bool:
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and any(k in obj for k in keys)


def check_output_file(path, what, keys, flag="--out"):
    """Refuse, before any work, an output file that would replace something other than an earlier ``what`` (a JSON
    object holding one of ``keys``): a checkpoint, a run's or a data directory's file, a folder, any other file.
    Then check that its folder can be written."""
    from .checkpoint import MAGIC  # checkpoint.py writes through this module

    if os.path.isdir(path):
        raise UsageError(
            f"{flag} {path} is a directory: name a file for the {what}, e.g. {os.path.join(path, 'report.json')}"
        )
    if os.path.lexists(path) and not _is_json_with(path, keys):
        with open(path, "rb") as f:
            ours = f.read(len(MAGIC)) == MAGIC
        inside = holds(os.path.dirname(os.path.abspath(path)))
        kind = "a fastsglr checkpoint" if ours else f"a file of {inside}" if inside else f"not a {what}"
        raise UsageError(f"{flag} {path} exists and is {kind}: the {what} would replace it; choose another {flag}")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), flag)


def check_output_dir(directory, what, flag="--out"):
    """Refuse, before any work, an output folder that is a file or that holds a training run or a data directory
    (``what`` would write into it); then check that it can be written."""
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise UsageError(f"{flag} {directory} is a file: name a directory for the {what}")
    inside = holds(directory) if os.path.isdir(directory) else None
    if inside:
        raise UsageError(f"{flag} {directory} holds {inside}: the {what} would write into it; choose another {flag}")
    check_writable_dir(directory, flag)


def check_writable_dir(directory, flag="--out"):
    """Fail before any work starts when nothing can be written in ``directory`` (created if missing): a path too
    long, under a file, on a read-only device, or without permission. Creating the folder and a probe file there
    is the one test that sees all of them, root included."""
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, f".fastsglr-probe-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except FileExistsError:  # makedirs met a file on the way
        raise UsageError(f"cannot write in {directory} (a file is in the way): choose another {flag}") from None
    except OSError as exc:
        raise UsageError(f"cannot write in {directory} ({exc.strerror}): choose another {flag}") from None
