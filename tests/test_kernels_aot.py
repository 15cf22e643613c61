"""Checks of the compiled (non-interpreted) Triton kernels that need no GPU.

Both run in a fresh interpreter without TRITON_INTERPRET, whatever this pytest process has imported: the kernels
must be built by ``@triton.jit`` proper, and Triton reads the variable at import.
"""

import json
import os
import subprocess
import sys
import textwrap

ENV = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}


def run_python(*args):
    proc = subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_aot_sm90a_no_register_spills():
    """Every kernel, in every launch configuration the ops use, compiled for sm_90a (H100) on this CPU-only
    machine: registers per thread printed, and no local memory or stack frame, i.e. no spills."""
    records = json.loads(run_python("-m", "fastsglr.kernels.aot", "--arch", "90", "--json"))
    print()
    for rec in records:
        print(
            f"{rec['kernel']:<62} {rec['target']} warps={rec['num_warps']:<2} regs/thread={rec['registers']:<3} "
            f"local={rec['local_bytes']} stack={rec['stack_bytes']}"
        )
    names = {rec["kernel"].split()[0] for rec in records}
    assert names == {"pgd_step", "sglr_forward", "soft_ce_forward"}
    assert len(records) == 6 + 2 * 12  # pgd: 3 dtypes x 2 scalar kinds; losses: 4 K x 3 dtypes each
    assert all(rec["target"] == "sm_90a" for rec in records)
    spilling = [rec["kernel"] for rec in records if rec["spills"]]
    assert not spilling, f"register spills in {spilling}"


TRACE_CUDA = textwrap.dedent("""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch._subclasses.functional_tensor import dispatch_functionalize
    from torch.fx.experimental.proxy_tensor import make_fx
    import fastsglr.kernels as K

    def step(z_adv, z_clean, labels, index, table, x_adv, x, grad, step_size, eps):
        loss = K.sglr_loss(z_adv, z_clean, labels, index, table, 0.2, 1.5, 0.9, 0.2)
        loss = loss + K.soft_cross_entropy(z_adv, torch.softmax(z_clean, dim=1))
        K.pgd_step_(x_adv, x, grad, step_size, eps)
        return loss, K.pgd_step(x_adv, x, grad, 2 / 255, 8 / 255)

    with FakeTensorMode():
        cl = torch.channels_last
        args = (torch.empty(128, 100, device="cuda"), torch.empty(128, 100, device="cuda"),
                torch.zeros(128, dtype=torch.long, device="cuda"), torch.zeros(128, dtype=torch.long, device="cuda"),
                torch.empty(1000, 100, device="cuda"), torch.empty(128, 3, 32, 32, device="cuda").to(memory_format=cl),
                torch.empty(128, 3, 32, 32, device="cuda").to(memory_format=cl),
                torch.empty(128, 3, 32, 32, device="cuda").to(memory_format=cl),
                torch.empty((), device="cuda"), torch.empty((), device="cuda"))
        graph = make_fx(dispatch_functionalize(step), tracing_mode="fake")(*args)
    kernels = [str(n.kwargs["kwargs"]) for n in graph.graph.nodes if "triton_kernel_wrapper" in str(n.target)]
    print(len(kernels))
""")


def test_cuda_path_traces_to_triton_kernels():
    """The CUDA branch of every op, traced on fake CUDA tensors the way torch.compile's AOTAutograd does
    (functionalised): each public function becomes Triton kernel nodes, no CPU fallback and no opaque call."""
    assert run_python("-c", TRACE_CUDA).split()[-1] == "4"  # sglr_forward, soft_ce_forward, pgd_step_, pgd_step
