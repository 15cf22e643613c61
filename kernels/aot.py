"""Compile every kernel ahead of time for a GPU this machine may not have, and read its resource usage.

``python -m fastsglr.kernels.aot [--arch 90] [--json]`` compiles each kernel for the launch configurations the
ops use (every dtype; the SGLR kernels at K = 10, 100, 1000 and MAX_K) with ``triton.compile`` on an
``ASTSource``, then reads registers per thread and local/stack memory off the cubin with the ``cuobjdump``
that Triton's wheel ships. A register spill goes to local memory through the stack frame, so LOCAL = STACK = 0
means no spills. No GPU and no CUDA driver are needed. TRITON_INTERPRET must be unset: the interpreter builds
kernels that cannot be compiled.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .pgd import BLOCK, ELEMENTS_PER_THREAD, pgd_step_kernel
from .sglr import MAX_K, launch_config, sglr_forward_kernel, soft_ce_forward_kernel
from .utils import KERNEL_DTYPES, num_warps_for

_TRITON_TYPES = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.float64: "fp64",
    torch.int64: "i64",
}
TRAINING_NUMEL = 128 * 3 * 32 * 32  # one CIFAR batch: only divisibility by 16 matters to the compiler


def _specialize(kernel, args: dict, constexprs: dict):
    """Signature, constants and attributes as Triton's launcher derives them from real arguments.

    ``args`` maps each runtime argument to an example: a torch.dtype stands for a tensor of that dtype (a
    16-byte-aligned pointer, as PyTorch allocates), ints and floats for themselves. Like the launcher, an int
    equal to 1 becomes a constant and an int divisible by 16 carries a divisibility hint.
    """
    assert set(args) | set(constexprs) == set(kernel.arg_names), "example arguments out of date with the kernel"
    signature, constants, attrs = {}, dict(constexprs), {}
    for position, name in enumerate(kernel.arg_names):
        value = args.get(name)
        if name in constexprs or value == 1:
            signature[name] = "constexpr"
            constants.setdefault(name, value)
        elif isinstance(value, torch.dtype):
            signature[name] = "*" + _TRITON_TYPES[value]
            attrs[(position,)] = [["tt.divisibility", 16]]
        elif isinstance(value, int):
            signature[name] = "i32" if abs(value) < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(position,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "fp32"
    return signature, constants, attrs


def _configurations():
    """(label, kernel, example args, constexprs, num_warps) for every launch configuration worth checking."""
    for dtype in KERNEL_DTYPES:
        for in_memory in (False, True):
            scalar = torch.float32 if in_memory else 0.5
            yield (
                f"pgd_step {_TRITON_TYPES[dtype]} scalars={'tensor' if in_memory else 'float'}",
                pgd_step_kernel,
                dict(
                    x_adv_ptr=dtype,
                    x_ptr=dtype,
                    grad_ptr=dtype,
                    out_ptr=dtype,
                    n_elements=TRAINING_NUMEL,
                    step_size=scalar,
                    eps=scalar,
                ),
                dict(STEP_IN_MEMORY=in_memory, EPS_IN_MEMORY=in_memory, BLOCK=BLOCK),
                num_warps_for(BLOCK, ELEMENTS_PER_THREAD),
            )
    batch = 128
    for n_cols in (10, 100, 1000, MAX_K):
        config = launch_config(batch, n_cols)
        blocks = {k: config[k] for k in ("BLOCK_B", "BLOCK_K")}
        for dtype in KERNEL_DTYPES:
            tag = f"K={n_cols} {_TRITON_TYPES[dtype]} BLOCK_B={config['BLOCK_B']} BLOCK_K={config['BLOCK_K']}"
            yield (
                f"sglr_forward {tag}",
                sglr_forward_kernel,
                dict(
                    z_adv_ptr=dtype,
                    z_clean_ptr=dtype,
                    labels_ptr=torch.int64,
                    index_ptr=torch.int64,
                    table_ptr=torch.float32,
                    row_loss_ptr=torch.float32,
                    grad_ptr=dtype,
                    n_rows=batch,
                    n_cols=n_cols,
                    stride_adv=n_cols,
                    stride_adv_k=1,
                    stride_clean=n_cols,
                    stride_clean_k=1,
                    stride_labels=1,
                    stride_index=1,
                    stride_table=n_cols,
                    stride_table_k=1,
                    settings_ptr=torch.float64,
                ),
                blocks,
                config["num_warps"],
            )
            yield (
                f"soft_ce_forward {tag}",
                soft_ce_forward_kernel,
                dict(
                    z_ptr=dtype,
                    y_ptr=torch.float32,
                    row_loss_ptr=torch.float32,
                    grad_ptr=dtype,
                    n_rows=batch,
                    n_cols=n_cols,
                    stride_z=n_cols,
                    stride_z_k=1,
                    stride_y=n_cols,
                    stride_y_k=1,
                ),
                blocks,
                config["num_warps"],
            )


def cuobjdump_path() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def resource_usage(cubin: bytes) -> dict:
    """REG, STACK and LOCAL of the (single) kernel in ``cubin``, from ``cuobjdump --dump-resource-usage``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        out = subprocess.run(
            [cuobjdump_path(), "--dump-resource-usage", path], check=True, capture_output=True, text=True
        ).stdout
    usage = {key: int(value) for key, value in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", out)}
    if set(usage) != {"REG", "STACK", "LOCAL"}:
        raise RuntimeError(f"unexpected cuobjdump output:\n{out}")
    return usage


def compile_all(arch: int = 90) -> list:
    """Compile every configuration for sm_<arch> (sm_90 becomes sm_90a) and return one record per kernel."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: interpreted kernels cannot be compiled ahead of time")
    target = GPUTarget("cuda", arch, 32)
    records = []
    for label, kernel, args, constexprs, num_warps in _configurations():
        signature, constants, attrs = _specialize(kernel, args, constexprs)
        compiled = triton.compile(
            ASTSource(kernel, signature, constants, attrs), target=target, options={"num_warps": num_warps}
        )
        target_line = re.search(r"^\.target\s+(\S+)", compiled.asm["ptx"], re.MULTILINE).group(1)
        usage = resource_usage(compiled.asm["cubin"])
        records.append(
            {
                "kernel": label,
                "target": target_line,
                "num_warps": num_warps,
                "registers": usage["REG"],
                "local_bytes": usage["LOCAL"],
                "stack_bytes": usage["STACK"],
                "spills": usage["LOCAL"] > 0 or usage["STACK"] > 0,
            }
        )
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability times ten (90: H100)")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    args = parser.parse_args(argv)
    records = compile_all(args.arch)
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        for rec in records:
            print(
                f"{rec['kernel']:<62} {rec['target']} warps={rec['num_warps']:<2} regs/thread={rec['registers']:<3} "
                f"local={rec['local_bytes']} stack={rec['stack_bytes']}{'  SPILLS' if rec['spills'] else ''}"
            )
    return 1 if any(rec["spills"] for rec in records) else 0


if __name__ == "__main__":
    sys.exit(main())
