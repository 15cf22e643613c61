"""Checkpoints: a header line (magic, format version, sha256 of the payload) and the torch-serialised payload.

Written atomically (temp file, fsync, rename), so a crash mid-write leaves the previous file intact; the checksum
names a file damaged afterwards (a truncated copy, a bad disk) as such instead of unpickling garbage. ``last.pt``
keeps its predecessor as ``last.prev.pt``, which resume falls back to when ``last.pt`` is damaged.
"""

import hashlib
import io
import json
import os
import pickle

import torch

from .config import Config
from .errors import UsageError
from .files import atomic_file, resume_fix

# 3: "dataset", "step" (a mid-epoch last.pt after SIGINT/SIGTERM), "world_size", "torchrun" and per-rank "ranks"
# 4: "data_checksums" (the data directory's files the run trained on); only tensors and plain data inside
# 5: "swa" (swa.py: the models averaged and the averaged state dict, which a checkpoint's numbers are of)
FORMAT_VERSION = 5
# Format 4 differs only by lacking "swa": it reads as a run without weight averaging (runs of the previous version
# resume and evaluate). A format-4 reader refuses format 5, whose SWA average it would ignore.
READABLE_FORMATS = (4, FORMAT_VERSION)
MAGIC = b"FASTSGLR-CHECKPOINT"


def previous_path(path) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}.prev{ext}"


def save_checkpoint(path, state: dict, keep_previous=False):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = b"%s %d %s\n" % (MAGIC, FORMAT_VERSION, hashlib.sha256(payload).hexdigest().encode())
    # Only training writes checkpoints, so a full disk is fixed by resuming the run from its last good one.
    with atomic_file(
        path,
        "wb",
        fix=resume_fix(os.path.dirname(path) or "."),
        previous=previous_path(path) if keep_previous else None,
    ) as f:
        f.write(header)
        f.write(payload)


def load_checkpoint(path, map_location="cpu") -> dict:
    """The state in ``path``; a missing, foreign, damaged or newer-format file is a one-line UsageError."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} does not exist: check the path")
    with open(path, "rb") as f:
        header, payload = f.readline(), f.read()
    fields = header.split()
    if len(fields) != 3 or fields[0] != MAGIC or not fields[1].isdigit():
        raise UsageError(f"checkpoint {path} is not a fastsglr checkpoint (no fastsglr header)")
    if int(fields[1]) not in READABLE_FORMATS:
        raise UsageError(
            f"checkpoint {path} has format {int(fields[1])}; this fastsglr reads formats "
            f"{' and '.join(map(str, READABLE_FORMATS))}: use the fastsglr version that wrote it"
        )
    if hashlib.sha256(payload).hexdigest().encode() != fields[2]:
        raise UsageError(f"checkpoint {path} is corrupt or truncated (checksum mismatch)")
    # The header's checksum only proves the file is intact: anyone can compute it. weights_only unpickles tensors
    # and plain containers and numbers, and refuses any other object, whose unpickling could run code.
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise UsageError(
            f"checkpoint {path} holds objects other than tensors and plain data, which could run code "
            f"when loaded: refused (use a checkpoint written by fastsglr)"
        ) from None


def load_resume_state(run_dir, world=None, map_location="cpu", log=print) -> dict:
    """``last.pt``, or ``last.prev.pt`` when ``last.pt`` is damaged or was lost between the two renames.

    A mid-epoch ``last.pt`` (written on SIGINT/SIGTERM) holds each rank's position, so only as many ranks as wrote
    it (``world``: a ``distributed.World``; None is one process) can go on from it; with another number, or with
    torchrun where there was none or the other way round, the epoch restarts from ``last.prev.pt``, its start.
    """
    last = os.path.join(run_dir, "last.pt")
    prev = previous_path(last)
    try:
        state = load_checkpoint(last, map_location)
    except UsageError as exc:
        if not os.path.isfile(prev):
            raise
        log(f"warning: {exc}; resuming from the previous good checkpoint {prev}")
        return load_checkpoint(prev, map_location)
    written_by, size = state.get("world_size", 1), 1 if world is None else world.size
    if not state.get("step") or (written_by, state.get("torchrun", False)) == (
        size,
        world is not None and world.launched,
    ):
        return state
    start = load_checkpoint(prev, map_location) if os.path.isfile(prev) else {}
    if start.get("step", 1) != 0 or start.get("epoch") != state["epoch"]:
        raise UsageError(
            f"{last} was written mid-epoch by {written_by} ranks and the epoch's start is gone: "
            f"resume with {written_by} ranks"
        )
    log(
        f"{last} was written mid-epoch by {written_by} ranks; with {size}, epoch {state['epoch'] + 1} "
        f"restarts from its start ({prev})"
    )
    return start


def resume_config(run_dir) -> Config:
    """The config of a run to resume: its config.json, or, when that was lost, the copy inside last.pt."""
    path = os.path.join(run_dir, "config.json")
    if not any(os.path.isfile(os.path.join(run_dir, f)) for f in ("last.pt", "last.prev.pt")):
        raise UsageError(f"{run_dir} has no last.pt to resume from: start a new run with --out {run_dir}")
    if not os.path.isfile(path):
        return Config.from_dict(load_resume_state(run_dir, log=lambda *_: None)["config"])
    try:
        with open(path) as f:
            return Config.from_dict(json.load(f))
    except (ValueError, TypeError, UsageError) as exc:  # TypeError: valid JSON, but not an object
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise UsageError(
            f"{path} is damaged ({detail}): restore it, or delete it and resume from the copy of the "
            f"config inside last.pt"
        ) from None


def load_model(path, device="cpu"):
    """The trained model of a checkpoint (best.pt, final.pt or last.pt), in eval mode, taking [0, 1] inputs."""
    return model_from_state(load_checkpoint(path, map_location=device), device)


def model_from_state(state, device="cpu"):
    """The trained model of a loaded checkpoint state, in eval mode, taking [0, 1] inputs: the SWA average once one
    was taken (the model an SWA run reports), else the trained weights."""
    from .models import build_model
    from .swa import reported_weights

    model = build_model(**state["model_spec"]).to(device)
    model.load_state_dict(reported_weights(state))
    return model.eval()


def check_same_data(state, checksums, path, data, fix):
    """Refuse data whose files changed since the checkpoint's run trained on them (re-prepared with other label
    noise, say): same name, same shapes, other labels or images. ``checksums``: the data directory's files now."""
    for name, expected in state["data_checksums"].items():
        if checksums.get(name, expected) != expected:
            raise UsageError(
                f"{os.path.join(data, name)} changed since {path} was written (its checksum differs: "
                f"the data directory was re-prepared or replaced): {fix}"
            )


def _images(classes, channels, size) -> str:
    return f"{classes} classes of {channels}x{size}x{size} images"


def check_checkpoint_fits_data(state, info, path, fix=None):
    """Refuse, before any work, a checkpoint whose model cannot take the data directory's images and labels, or
    that was trained on another data set (same shapes, other classes: its accuracy there would mean nothing).
    ``fix`` replaces the default advice (pass --data with the checkpoint's data, or another checkpoint)."""
    spec, trained_on = state["model_spec"], state["dataset"]
    built = (spec["num_classes"], spec["in_channels"], spec["image_size"])
    holds = (info.num_classes, info.in_channels, info.image_size)
    if built == holds and trained_on == info.dataset:
        return
    fix = fix or f"pass --data with the data the checkpoint was trained on, or a checkpoint trained on {info.dataset}"
    raise UsageError(
        f"checkpoint {path} was trained on {trained_on} ({_images(*built)}) but "
        f"{info.root} holds {info.dataset} ({_images(*holds)}): {fix}"
    )


def estimate_run_bytes(model_name) -> int:
    """About what a training run writes: four checkpoints (last, last.prev, best, final), each holding the weights
    and SGD's momentum (as large again) in float32; a quarter more covers the per-sample label table (CIFAR-100:
    20 MB per checkpoint), metrics and curves. The count is taken at CIFAR's shape: every model ends in a global
    pool, so the data changes it only through the last layer."""
    from .models import build_model

    with torch.device("meta"):  # counts parameters without allocating them
        model = build_model(model_name)
    floats = sum(t.numel() for t in model.state_dict().values()) + sum(p.numel() for p in model.parameters())
    return int(4 * 4 * floats * 1.25)
