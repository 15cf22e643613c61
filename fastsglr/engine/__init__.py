"""Engines run the one training iteration (``iteration.train_step``): ``reference`` eagerly; ``fast`` compiled, in
mixed precision and, on CUDA, channels-last and captured as a CUDA graph (``fast.py``)."""

from ..distributed import World
from ..errors import UsageError


def build_engine(model, optimizer, strategy, cfg, world=World(), distill=None):
    """The engine named by ``cfg.engine``; under torchrun it trains ``model`` wrapped in DDP. ``distill``: KD-AT's
    teachers and weights (``distill.Distillation``), or None."""
    if cfg.engine == "reference":
        from .reference import ReferenceEngine

        return ReferenceEngine(model, optimizer, strategy, cfg, world, distill)
    if cfg.engine == "fast":
        from .fast import FastEngine

        return FastEngine(model, optimizer, strategy, cfg, world=world, distill=distill)
    raise UsageError(f"unknown engine '{cfg.engine}': choose reference or fast")
