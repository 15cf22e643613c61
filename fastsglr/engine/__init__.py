"""Engines run the one training iteration (``iteration.train_step``): ``reference`` eagerly; ``fast`` compiled."""
from ..errors import UsageError


def build_engine(model, optimizer, strategy, cfg):
    if cfg.engine == "reference":
        from .reference import ReferenceEngine

        return ReferenceEngine(model, optimizer, strategy, cfg)
    raise UsageError(f"--engine {cfg.engine} is not yet available in this version: use --engine reference")
