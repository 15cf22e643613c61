"""Small helpers shared by the Triton kernel modules."""

import torch

# The dtypes the Triton kernels load and store; their math is always float32.
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def is_interpreted(kernel) -> bool:
    """True when ``@triton.jit`` built ``kernel`` for the Triton interpreter (TRITON_INTERPRET=1 at import).

    Triton reads TRITON_INTERPRET when the decorator runs, not when the kernel is launched, so this is the only
    reliable way to know how a kernel will execute: setting the variable after the import changes nothing.
    """
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # a Triton without an interpreter cannot have built one
        return False
    return isinstance(kernel, InterpretedFunction)


def check_dtypes(op: str, *tensors: torch.Tensor) -> None:
    """Reject dtypes the kernels do not handle, with a message instead of a Triton compile error."""
    for t in tensors:
        if t.dtype not in KERNEL_DTYPES:
            raise TypeError(f"{op}: the Triton kernel takes float32, bfloat16 or float16 tensors, got {t.dtype}")


def num_warps_for(elements_per_program: int, elements_per_thread: int) -> int:
    """Warps per program for a tile of that many elements, each thread holding about ``elements_per_thread``
    (1 to 32 warps: a CUDA block has at most 1024 threads)."""
    return max(1, min(32, elements_per_program // (32 * elements_per_thread)))
