"""Fused ops of fastsglr (installed as ``fastsglr.kernels``). ``reference`` holds their definitions.

The training iteration calls its ops through an ``OpSet`` that its engine was built with: ``FUSED_OPS``, the
``torch.library`` ops (namespace ``fastsglr``, see ``ops``: Triton kernels on CUDA, the plain PyTorch reference on
CPU, or the Triton kernels in the Triton interpreter on CPU when TRITON_INTERPRET=1 was set before the first import
of this package; ``backend(tensor)`` says which), or ``PLAIN_OPS``, the plain PyTorch definitions on every device.
Nothing swaps one for the other at run time.
"""

from collections.abc import Callable
from dataclasses import dataclass

from . import reference
from .ops import backend, pgd_step, pgd_step_, sglr_loss, sglr_settings, soft_cross_entropy
from .reference import sglr_target


@dataclass(frozen=True)
class OpSet:
    """The ops the training iteration calls (same signatures and semantics in every set)."""

    name: str
    pgd_step: Callable
    sglr_loss: Callable
    soft_cross_entropy: Callable


PLAIN_OPS = OpSet("plain", reference.pgd_step, reference.sglr_loss, reference.soft_cross_entropy)
FUSED_OPS = OpSet("fused", pgd_step, sglr_loss, soft_cross_entropy)

__all__ = [
    "FUSED_OPS",
    "PLAIN_OPS",
    "OpSet",
    "backend",
    "pgd_step",
    "pgd_step_",
    "sglr_loss",
    "sglr_settings",
    "sglr_target",
    "soft_cross_entropy",
]
