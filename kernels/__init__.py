"""Fused ops of fastsglr (installed as ``fastsglr.kernels``). ``reference`` holds their definitions.

Callers import the ops from here: ``from fastsglr.kernels import pgd_step, sglr_loss, soft_cross_entropy``.
They are ``torch.library`` ops (namespace ``fastsglr``, see ``ops``): Triton kernels on CUDA, the plain PyTorch
reference on CPU, or the Triton kernels in the Triton interpreter on CPU when TRITON_INTERPRET=1 was set before
the first import of this package; ``backend(tensor)`` says which.
"""
from .ops import backend, pgd_step, pgd_step_, sglr_loss, soft_cross_entropy
from .reference import sglr_target

__all__ = ["backend", "pgd_step", "pgd_step_", "sglr_loss", "sglr_target", "soft_cross_entropy"]
