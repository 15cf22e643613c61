"""Checkpoints: a header line (magic, format version, sha256 of the payload) and the torch-serialised payload.

Written atomically (temp file, fsync, rename), so a crash mid-write leaves the previous file intact; the checksum
names a file damaged afterwards (a truncated copy, a bad disk) as such instead of unpickling garbage. ``last.pt``
keeps its predecessor as ``last.prev.pt``, which resume falls back to when ``last.pt`` is damaged.
"""
import hashlib
import io
import json
import os

import torch

from .config import Config
from .errors import UsageError

FORMAT_VERSION = 2
MAGIC = b"FASTSGLR-CHECKPOINT"


def previous_path(path) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}.prev{ext}"


def save_checkpoint(path, state: dict, keep_previous=False):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = b"%s %d %s\n" % (MAGIC, FORMAT_VERSION, hashlib.sha256(payload).hexdigest().encode())
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    if keep_previous and os.path.exists(path):
        os.replace(path, previous_path(path))
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu") -> dict:
    """The state in ``path``; a missing, foreign, damaged or newer-format file is a one-line UsageError."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} does not exist: check the path")
    with open(path, "rb") as f:
        header, payload = f.readline(), f.read()
    fields = header.split()
    if len(fields) != 3 or fields[0] != MAGIC or not fields[1].isdigit():
        raise UsageError(f"checkpoint {path} is not a fastsglr checkpoint (no fastsglr header)")
    if int(fields[1]) != FORMAT_VERSION:
        raise UsageError(f"checkpoint {path} has format {int(fields[1])}; this fastsglr reads format "
                         f"{FORMAT_VERSION}: use the fastsglr version that wrote it")
    if hashlib.sha256(payload).hexdigest().encode() != fields[2]:
        raise UsageError(f"checkpoint {path} is corrupt or truncated (checksum mismatch)")
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)


def load_resume_state(run_dir, map_location="cpu", log=print) -> dict:
    """``last.pt``, or ``last.prev.pt`` when ``last.pt`` is damaged or was lost between the two renames."""
    last = os.path.join(run_dir, "last.pt")
    try:
        return load_checkpoint(last, map_location)
    except UsageError as exc:
        prev = previous_path(last)
        if not os.path.isfile(prev):
            raise
        log(f"warning: {exc}; resuming from the previous good checkpoint {prev}")
        return load_checkpoint(prev, map_location)


def resume_config(run_dir) -> Config:
    """The config of a run to resume, read from its config.json."""
    path = os.path.join(run_dir, "config.json")
    if not any(os.path.isfile(os.path.join(run_dir, f)) for f in ("last.pt", "last.prev.pt")):
        raise UsageError(f"{run_dir} has no last.pt to resume from: start a new run with --out {run_dir}")
    with open(path) as f:
        return Config.from_dict(json.load(f))


def load_model(path, device="cpu"):
    """The trained model of a checkpoint (best.pt, final.pt or last.pt), in eval mode, taking [0, 1] inputs."""
    from .models import build_model

    state = load_checkpoint(path, map_location=device)
    model = build_model(**state["model_spec"]).to(device)
    model.load_state_dict(state["model"])
    return model.eval()
