"""Per-channel input normalisation as the first layer of every model.

Keeping ``(x - mean) / std`` inside the network means attacks, data loaders and
checkpoints all work in [0, 1] pixel space, and the constants follow the model
through ``.to(device)``, ``channels_last`` and ``torch.compile`` as buffers.
"""

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} entries but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std entries must be positive, got {tuple(std)}")
        # Shaped (1, C, 1, 1) so they broadcast over NCHW in either memory format.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={_fmt(self.mean)}, std={_fmt(self.std)}"


def _fmt(t: torch.Tensor) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in t.flatten().tolist()) + ")"
