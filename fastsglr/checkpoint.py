"""Checkpoints: written atomically (temp file, fsync, rename), so a crash mid-write leaves the previous one intact."""
import json
import os

import torch

from .config import Config
from .errors import UsageError

FORMAT_VERSION = 1


def save_checkpoint(path, state: dict):
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        torch.save({"format_version": FORMAT_VERSION, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu") -> dict:
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} does not exist: check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises assorted errors on truncated or foreign files
        raise UsageError(f"checkpoint {path} is unreadable ({type(exc).__name__}): it is damaged or not ours") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"checkpoint {path} has format {state.get('format_version') if isinstance(state, dict) else '?'}"
                         f", this fastsglr reads {FORMAT_VERSION}")
    return state


def resume_config(run_dir) -> Config:
    """The config of a run to resume, read from its config.json."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(os.path.join(run_dir, "last.pt")):
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
