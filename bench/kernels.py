"""Benchmark of the fused ops of fastsglr.kernels against eager PyTorch and torch.compile of the reference.

    python bench/kernels.py [--quick] [--device cuda|cpu] [--out results.json]

On a GPU: first a correctness pass, then each op at training sizes (a CIFAR batch 128 x 3 x 32 x 32; 128 x 10
and 128 x 100 logits) in microseconds, and at large sizes in GB/s as a fraction of the device-to-device copy
bandwidth measured here (the goal for the fused kernels is >= 85%). The losses are timed forward + backward, since
the fused op does the backward's work in its forward pass; their GB/s counts the bytes a minimal fwd+bwd must
move, the same for every provider. Times are medians of ``triton.testing.do_bench`` (CUDA events, L2 flushed).
On a CPU there is nothing meaningful to time: it runs the correctness pass only and says so.
"""

import argparse
import json
import platform
import sys

import torch

import fastsglr.kernels as K
from fastsglr.kernels import reference as R

EPS, STEP = 8 / 255, 2 / 255
HYPER = (0.2, 1.5, 0.9, 0.2)  # r, temperature, alpha, lam (the paper's best r and T)
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2**-7, torch.float16: 2**-9}  # relative, on outputs in dtype


# ---- Inputs ---------------------------------------------------------------------------------------------------


def pgd_inputs(shape, dtype, device, channels_last=False):
    x = torch.rand(shape, device=device)
    x_adv = (x + (2 * torch.rand(shape, device=device) - 1) * EPS).clamp(0, 1)
    grad = torch.randn(shape, device=device)
    tensors = [t.to(dtype) for t in (x_adv, x, grad)]
    if channels_last:
        tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    return tensors


def loss_inputs(batch, n_cols, dtype, device):
    """Logits, labels, unique indices into a table with one row per sample of a dataset twice the batch."""
    n = 2 * batch
    z_adv = (3 * torch.randn(batch, n_cols, device=device)).to(dtype).requires_grad_()
    z_clean = (3 * torch.randn(batch, n_cols, device=device)).to(dtype)
    labels = torch.randint(0, n_cols, (batch,), device=device)
    index = torch.randperm(n, device=device)[:batch]
    table = torch.softmax(torch.randn(n, n_cols, device=device), dim=1)
    return z_adv, z_clean, labels, index, table


# ---- Correctness ----------------------------------------------------------------------------------------------


def _error(got, expected):
    """Largest error relative to the largest expected magnitude (a scale-free number to compare to tolerances)."""
    return ((got.double() - expected.double()).abs().max() / expected.double().abs().max().clamp_min(1e-30)).item()


def correctness(device, quick):
    """Each op on fresh inputs against its float64 reference; one record per (op, dtype, size)."""
    checks = []
    sizes = [(7, 10), (33, 100)] if quick else [(1, 2), (7, 10), (128, 100), (5, 1000)]
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        tol = TOLERANCE[dtype]
        x_adv, x, grad = pgd_inputs((3, 3, 17, 19), dtype, device, channels_last=True)
        out = K.pgd_step(x_adv, x, grad, STEP, torch.tensor(EPS, device=device))
        expected = R.pgd_step(x_adv.double(), x.double(), grad.double(), STEP, EPS)
        checks.append(
            {
                "op": "pgd_step",
                "dtype": str(dtype),
                "size": list(x.shape),
                "error": _error(out, expected),
                "tolerance": tol,
                "layout_kept": out.stride() == x_adv.stride(),
            }
        )
        for batch, n_cols in sizes:
            z_adv, z_clean, labels, index, table = loss_inputs(batch, n_cols, dtype, device)
            table64 = table.double()
            z64 = z_adv.detach().double().requires_grad_()
            K.sglr_loss(z_adv, z_clean, labels, index, table, *HYPER).backward()
            R.sglr_loss(z64, z_clean.double(), labels, index, table64, *HYPER).backward()
            checks.append(
                {
                    "op": "sglr_loss",
                    "dtype": str(dtype),
                    "size": [batch, n_cols],
                    "tolerance": tol,
                    "error": max(_error(z_adv.grad, z64.grad), _error(table, table64)),
                }
            )
            target = torch.rand(batch, n_cols, device=device)
            z_adv.grad, z64.grad = None, None
            K.soft_cross_entropy(z_adv, target).backward()
            R.soft_cross_entropy(z64, target.double()).backward()
            checks.append(
                {
                    "op": "soft_cross_entropy",
                    "dtype": str(dtype),
                    "size": [batch, n_cols],
                    "tolerance": tol,
                    "error": _error(z_adv.grad, z64.grad),
                }
            )
    for check in checks:
        check["ok"] = check["error"] <= check["tolerance"] and check.get("layout_kept", True)
        check["backend"] = K.backend(torch.empty(0, device=device))
    return checks


# ---- Timing (CUDA only) ---------------------------------------------------------------------------------------


def _median_ms(fn, grad_to_none=None, quick=False):
    from triton.testing import do_bench

    return do_bench(
        fn, warmup=10 if quick else 25, rep=40 if quick else 200, grad_to_none=grad_to_none, return_mode="median"
    )


def copy_bandwidth_gbps(quick):
    """Device-to-device copy bandwidth (bytes read + written per second), the ceiling for streaming kernels."""
    n_bytes = (256 if quick else 1024) * 2**20
    src = torch.empty(n_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * n_bytes / (_median_ms(lambda: dst.copy_(src), quick=quick) * 1e-3) / 1e9


def _providers(reference_fn, fused_fn):
    return {"eager": reference_fn, "compile": torch.compile(reference_fn), "fused": fused_fn}


def time_pgd(shape, dtype, channels_last, quick):
    x_adv, x, grad = pgd_inputs(shape, dtype, "cuda", channels_last)
    step, eps = torch.tensor(STEP, device="cuda"), torch.tensor(EPS, device="cuda")
    n_bytes = 4 * x.numel() * x.element_size()  # three tensors read, one written
    providers = _providers(R.pgd_step, K.pgd_step)
    providers["fused_inplace"] = K.pgd_step_
    records = []
    for provider, fn in providers.items():
        ms = _median_ms(lambda: fn(x_adv, x, grad, step, eps), quick=quick)
        records.append(
            {
                "op": "pgd_step",
                "provider": provider,
                "size": list(shape),
                "dtype": str(dtype),
                "layout": "channels_last" if channels_last else "contiguous",
                "us": ms * 1e3,
                "bytes": n_bytes,
                "gbps": n_bytes / (ms * 1e-3) / 1e9,
            }
        )
    return records


def time_losses(batch, n_cols, dtype, quick):
    """sglr_loss and soft_cross_entropy, forward + backward, for each provider."""
    z_adv, z_clean, labels, index, table = loss_inputs(batch, n_cols, dtype, "cuda")
    target = torch.softmax(torch.randn(batch, n_cols, device="cuda"), dim=1)
    s = z_adv.element_size()
    elems = batch * n_cols
    # Minimal traffic of forward + backward: logits in, target (or clean logits and table rows) in, table rows
    # out, the logits' gradient out.
    minimal = {
        "sglr_loss": elems * (3 * s + 2 * table.element_size()) + 2 * batch * 8,
        "soft_cross_entropy": elems * (2 * s + target.element_size()),
    }
    workloads = {
        "sglr_loss": (_providers(R.sglr_loss, K.sglr_loss), (z_adv, z_clean, labels, index, table, *HYPER)),
        "soft_cross_entropy": (_providers(R.soft_cross_entropy, K.soft_cross_entropy), (z_adv, target)),
    }
    records = []
    for op, (providers, args) in workloads.items():
        for provider, fn in providers.items():
            ms = _median_ms(lambda: fn(*args).backward(), grad_to_none=[z_adv], quick=quick)
            records.append(
                {
                    "op": op + " fwd+bwd",
                    "provider": provider,
                    "size": [batch, n_cols],
                    "dtype": str(dtype),
                    "us": ms * 1e3,
                    "bytes": minimal[op],
                    "gbps": minimal[op] / (ms * 1e-3) / 1e9,
                }
            )
    # The fused forward kernel alone, with the bytes it actually moves (its backward is one scaling pass).
    with torch.no_grad():
        ms = _median_ms(
            lambda: torch.ops.fastsglr.sglr_forward(
                z_adv, z_clean, labels, index, table, K.sglr_settings(*HYPER, "cuda")
            ),
            quick=quick,
        )
    n_bytes = elems * (3 * s + 2 * table.element_size()) + batch * (8 + 8 + 4)
    records.append(
        {
            "op": "sglr_forward kernel",
            "provider": "fused",
            "size": [batch, n_cols],
            "dtype": str(dtype),
            "us": ms * 1e3,
            "bytes": n_bytes,
            "gbps": n_bytes / (ms * 1e-3) / 1e9,
        }
    )
    return records


def timings(quick):
    # Each dtype, layout and size may recompile the reference: never let dynamo fall back to eager silently
    # under the "compile" label.
    torch._dynamo.config.cache_size_limit = 64
    copy = copy_bandwidth_gbps(quick)
    records = []
    dtypes = (torch.float32, torch.bfloat16)
    large_images = (64, 3, 224, 224) if quick else (256, 3, 224, 224)
    large_batch = 8192 if quick else 65536
    for dtype in dtypes:
        for channels_last in (False, True):
            records += time_pgd((128, 3, 32, 32), dtype, channels_last, quick)
        records += time_pgd(large_images, dtype, False, quick)
        for n_cols in (10, 100):
            records += time_losses(128, n_cols, dtype, quick)
        records += time_losses(large_batch, 1000, dtype, quick)
    for rec in records:
        rec["fraction_of_copy"] = rec["gbps"] / copy
    return copy, records


# ---- Main -----------------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the results to this JSON file")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    checks = correctness(args.device, args.quick)
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "backend": K.backend(torch.empty(0, device=args.device)),
        "checks": checks,
        "timings": [],
    }
    for c in checks:
        print(
            f"check {c['op']:<20} {c['dtype']:<16} {str(c['size']):<18} error {c['error']:.2e} "
            f"(tolerance {c['tolerance']:.1e}) {'ok' if c['ok'] else 'FAILED'}"
        )
    if args.device == "cuda":
        import triton

        result["triton"] = triton.__version__
        result["mode"] = "timed"
        result["copy_gbps"], result["timings"] = timings(args.quick)
        print(f"device-to-device copy: {result['copy_gbps']:.0f} GB/s")
        for r in result["timings"]:
            print(
                f"{r['op']:<26} {r['provider']:<14} {str(r['size']):<20} {r['dtype']:<15} {r['us']:9.1f} us "
                f"{r['gbps']:7.0f} GB/s {100 * r['fraction_of_copy']:5.1f}% of copy"
            )
    else:
        result["mode"] = "correctness-only"
        print(f"CPU ({result['backend']} backend): correctness pass only, no timings (they need a GPU).")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
