"""Epochs per hour of adversarial training (PGD-10 + SGLR, batch 128, CIFAR-shaped data), climbing the fast
engine's ablation ladder in one run.

    python bench/epochs_per_hour.py [--quick] [--models preactresnet18 wrn34_10] [--data DIR] [--out FILE.json]

Every rung runs the same iteration (``iteration.train_step``) and adds one switch of ``fastsglr.engine.fast``:

    reference        ReferenceEngine: eager, fp32, the fused ops' plain PyTorch definitions
    +bf16 autocast   every forward under bf16 autocast
    +channels-last   NHWC model and inputs
    +torch.compile   the whole iteration compiled with fullgraph=True
    +fused kernels   the Triton kernels of fastsglr.kernels (pgd_step, sglr_loss)
    +CUDA graph      the compiled iteration captured once and replayed for every batch

For each rung: seconds per epoch (50,000 images: 390 iterations of 128), epochs per hour, speed-up over the
reference, and model FLOP utilisation: the FLOPs of one iteration (counted with FlopCounterMode, forward and
backward, attack included) per second, over the bf16 matrix-product peak measured in this run. The rungs time the
engine on batches already on the device; the loaders are timed alone (FFCV, GPU-resident), in images per second
against the images per second the fastest rung consumes: a loader below 1x would make the training wait.

On a GPU, times come from CUDA events after a warm-up (compilation, capture). ``--quick`` runs a tiny ladder (a
small CNN, PGD-2, a few hundred images) in a few minutes on a CPU: rungs that need CUDA are reported as skipped and
times are perf_counter seconds of a CPU, which check that the ladder runs and measure nothing else.
Writes FILE.json (after every rung, so a run cut short keeps what it measured), FILE.md and FILE.png.
"""
import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import sys
import tempfile
import time
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from fastsglr.config import Config
from fastsglr.data.datadir import DataInfo, read_data_dir
from fastsglr.data.loaders import DeviceLoader, FFCVLoader
from fastsglr.data.sources import channel_stats, load_raw
from fastsglr.engine.fast import WARMUP_STEPS, FastEngine, FastOptions, plain_ops
from fastsglr.engine.reference import ReferenceEngine
from fastsglr.errors import UsageError
from fastsglr.files import check_output_file, holds, write_json
from fastsglr.labels import build_label_strategy
from fastsglr.metrics import TrainMeter
from fastsglr.models import build_model
from fastsglr.optim import build_optimizer

IMAGES_PER_EPOCH = 50_000


# ---- The ladder -------------------------------------------------------------------------------------------------

def ladder():
    """(name, FastOptions or None for the reference engine), each rung one switch more than the one before."""
    rungs = [("reference eager fp32", None)]
    options = FastOptions(precision="fp32", channels_last=False, compile=False, fused=False, cuda_graph=False)
    for name, switch in (("+bf16 autocast", dict(precision="bf16")), ("+channels-last", dict(channels_last=True)),
                         ("+torch.compile", dict(compile=True)), ("+fused kernels", dict(fused=True)),
                         ("+CUDA graph", dict(cuda_graph=True))):
        options = dataclasses.replace(options, **switch)
        rungs.append((name, options))
    return rungs


def skip_reason(options, device):
    """Why a rung cannot run (or would only repeat the one before it) here; None if it runs."""
    if device.type == "cuda" or options is None:
        return None
    if options.cuda_graph:
        return "skipped: needs CUDA"
    if options.fused:
        return "skipped: needs CUDA (on a CPU the fused ops run their PyTorch definitions: the +torch.compile rung)"
    return None


# ---- Data -------------------------------------------------------------------------------------------------------

class ArrayLoader(DeviceLoader):
    """The GPU-resident loader over arrays already in memory (DeviceLoader reads them from a beton, with FFCV)."""

    def __init__(self, info, images, labels, batch_size, device, seed=0):
        super(DeviceLoader, self).__init__(info, "train", batch_size, device, train=True, seed=seed)
        self.images = torch.from_numpy(images).to(self.device)
        self.labels = self.clean_labels = torch.from_numpy(labels).to(self.device)


def ffcv_available():
    try:
        import ffcv  # noqa: F401
        return True
    except ImportError:
        return False


def training_data(args, device):
    """(DataInfo, GPU-resident loader, training labels): a prepared data directory, or synthetic images."""
    if args.data:
        info = read_data_dir(args.data)
        loader = DeviceLoader(info, "train", args.batch_size, device, train=True, seed=0)
        return info, loader, loader.labels
    raw = load_raw("synthetic", synthetic_train=args.images, synthetic_test=1)
    mean, std = channel_stats(raw.train.images)
    info = DataInfo(root="", dataset="synthetic", classes=tuple(raw.classes), image_shape=raw.train.images.shape[1:],
                    counts={"train": args.images, "test": 0}, mean=tuple(mean), std=tuple(std), crop_padding=4,
                    noise={})
    loader = ArrayLoader(info, raw.train.images, raw.train.labels, args.batch_size, device)
    return info, loader, loader.labels


def batch_pool(loader, size):
    """A few augmented batches, kept: the rungs time the engine, not the loader."""
    pool = []
    for batch in loader:
        pool.append(batch)
        if len(pool) == size:
            return pool
    return pool


# ---- Timing -----------------------------------------------------------------------------------------------------

class Clock:
    """Seconds of work queued between start() and stop(): CUDA events on a GPU, perf_counter on a CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def start(self):
        if self.cuda:
            self.begin, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            return self.begin.elapsed_time(self.end) / 1e3
        return time.perf_counter() - self.t0


def bf16_matmul_peak(device, quick):
    """Best bf16 matrix-product throughput in FLOP/s, the denominator of MFU."""
    n = 512 if quick else 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    clock, best = Clock(device), 0.0
    for _ in range(3 if quick else 10):
        clock.start()
        for _ in range(2 if quick else 20):
            a @ b
        seconds = clock.stop()
        best = max(best, (2 if quick else 20) * 2 * n**3 / seconds)
    return best


def build_run(args, name, info, train_labels, options, device):
    """Model, optimizer, strategy and engine of one rung, initialised identically for every rung."""
    torch.manual_seed(0)
    cfg = Config(model=name, attack_steps=args.attack_steps, batch_size=args.batch_size, labels="sglr",
                 device=device.type)
    model = build_model(name, info.num_classes, info.in_channels, info.image_size, info.mean, info.std)
    model = model.to(device)
    strategy = build_label_strategy(cfg, train_labels, info.num_classes).to(device)
    optimizer = build_optimizer(model.parameters(), cfg)
    if options is None:
        return optimizer, ReferenceEngine(model, optimizer, strategy, cfg)
    return optimizer, FastEngine(model, optimizer, strategy, cfg, options)


def run_steps(optimizer, engine, options, pool, count, start=0):
    """``count`` iterations with the trainer's protocol: the learning rate set on the param groups every step."""
    meter = TrainMeter(pool[0].images.device)
    with plain_ops() if options is None else contextlib.nullcontext():  # FastEngine switches ops itself
        for step in range(start, start + count):
            for group in optimizer.param_groups:
                group["lr"] = 0.1
            engine.step(pool[step % len(pool)], meter, step)
    return meter


class FlopCount(TorchDispatchMode):
    """FlopCounterMode's per-op formulas (matrix products and convolutions, forward and backward), without its
    module tracker, whose backward hooks refuse the attack's autograd.grad."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in flop_registry:
            self.total += flop_registry[func.overloadpacket](*args, **(kwargs or {}), out_val=out)
        return out


def iteration_flops(args, name, info, train_labels, pool, device):
    """FLOPs of one iteration (reference engine, plain ops) and of one forward per image."""
    optimizer, engine = build_run(args, name, info, train_labels, None, device)
    with FlopCount() as iteration:
        run_steps(optimizer, engine, None, pool, 1)
    with FlopCount() as forward, torch.no_grad():
        engine.model(pool[0].images)
    return iteration.total, forward.total / args.batch_size


def time_rung(args, name, info, train_labels, pool, options, device):
    """Seconds per iteration after the warm-up (compilation and capture happen there), and whether the compiled
    iteration is one graph (None: not compiled)."""
    optimizer, engine = build_run(args, name, info, train_labels, options, device)
    run_steps(optimizer, engine, options, pool, WARMUP_STEPS + 1)
    clock = Clock(device)
    clock.start()
    run_steps(optimizer, engine, options, pool, args.iters, start=WARMUP_STEPS + 1)
    return clock.stop() / args.iters, getattr(getattr(engine, "train_fn", None), "fullgraph", None)


def time_loader(loader, batches, device):
    """Images per second of ``loader`` alone, over ``batches`` batches after one warm-up batch."""
    it = iter(loader)
    next(it)
    clock = Clock(device)
    clock.start()
    n = 0
    for _, batch in zip(range(batches), it):
        n += batch.images.shape[0]
    return n / clock.stop()


# ---- One model's ladder, the loaders ----------------------------------------------------------------------------

def bench_model(args, model, info, train_labels, pool, device, peak, result, save):
    """The ladder for one model, into result["models"][model], saved after every rung."""
    iteration, forward = iteration_flops(args, model, info, train_labels, pool, device)
    entry = {"flops_per_iteration": iteration, "forward_flops_per_image": forward,
             "forward_equivalents_per_image": iteration / (forward * args.batch_size), "rungs": []}
    result["models"][model] = entry
    iterations_per_epoch = IMAGES_PER_EPOCH // args.batch_size
    reference = None
    for name, options in ladder():
        row = {"rung": name, "options": None if options is None else dataclasses.asdict(options)}
        entry["rungs"].append(row)
        reason = skip_reason(options, device)
        if reason:
            row["status"] = reason
            print(f"{model:<16} {name:<22} {reason}", flush=True)
            continue
        torch._dynamo.reset()  # a fresh compile cache per rung: rungs do not share recompilation limits
        try:
            seconds, one_graph = time_rung(args, model, info, train_labels, pool, options, device)
        except Exception as exc:  # report the rung and climb on: one failure should not lose the others
            traceback.print_exc()
            row["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        reference = seconds if options is None else reference
        epoch = seconds * iterations_per_epoch
        row.update(status="ok", seconds_per_iteration=seconds, seconds_per_epoch=epoch, epochs_per_hour=3600 / epoch,
                   speedup=reference / seconds if reference else float("nan"), mfu=iteration / seconds / peak,
                   images_per_second=args.batch_size / seconds, one_graph=one_graph)
        print(f"{model:<16} {name:<22} {epoch:9.2f} s/epoch {3600 / epoch:8.2f} epochs/h "
              f"{row['speedup']:6.2f}x  MFU {100 * row['mfu']:5.1f}%", flush=True)
        save()


def bench_loaders(args, info, loader, device, engine_images_per_second):
    """The loaders alone: GPU-resident always; FFCV when installed (on a beton: --data's, or synthetic written now)."""
    batches = min(len(loader) - 1, 4 if args.quick else 100)
    rows = [{"loader": "gpu-resident", "status": "ok", "images_per_second": time_loader(loader, batches, device)}]
    if not ffcv_available():
        rows.append({"loader": "ffcv", "status": "skipped: ffcv is not installed (the GPU-resident loader feeds the "
                                                 "engine instead)"})
    else:
        with tempfile.TemporaryDirectory() as tmp:
            if not args.data:
                from fastsglr.data.prepare import prepare
                prepare("synthetic", tmp, synthetic_train=args.images, synthetic_test=1, log=lambda *_: None)
            ffcv_info = read_data_dir(args.data or tmp)
            ffcv_loader = FFCVLoader(ffcv_info, "train", args.batch_size, device, train=True, seed=0,
                                     num_workers=os.cpu_count() or 1)
            rows.append({"loader": "ffcv", "status": "ok",
                         "images_per_second": time_loader(ffcv_loader, batches, device)})
    for row in rows:
        if row["status"] == "ok":
            row["vs_engine"] = row["images_per_second"] / engine_images_per_second if engine_images_per_second \
                else float("nan")
            print(f"loader {row['loader']:<14} {row['images_per_second']:12.0f} images/s "
                  f"({row['vs_engine']:.1f}x what the engine consumes)", flush=True)
        else:
            print(f"loader {row['loader']:<14} {row['status']}", flush=True)
    return rows


# ---- Reports ----------------------------------------------------------------------------------------------------

def markdown(result):
    lines = [f"# Epochs per hour on {result['device']}", "",
             f"torch {result['torch']}, triton {result['triton']}, {result['date']}; batch {result['batch_size']}, "
             f"PGD-{result['attack_steps']} + SGLR, {IMAGES_PER_EPOCH:,} images per epoch; "
             f"bf16 matmul peak measured: {result['bf16_peak_tflops']:.1f} TFLOP/s.", ""]
    if result["mode"] != "cuda":
        lines += ["A CPU run: its times check that the ladder runs and measure nothing else.", ""]
    for model, entry in result["models"].items():
        lines += [f"## {model}", "",
                  f"{entry['flops_per_iteration'] / 1e12:.3f} TFLOP per iteration, "
                  f"{entry['forward_flops_per_image'] / 1e9:.3f} GFLOP per forward per image: "
                  f"{entry['forward_equivalents_per_image']:.1f} forward-equivalents per image.", "",
                  "| rung | s / epoch | epochs / hour | speed-up | MFU |", "|---|---:|---:|---:|---:|"]
        for row in entry["rungs"]:
            if row["status"] == "ok":
                lines.append(f"| {row['rung']} | {row['seconds_per_epoch']:.2f} | {row['epochs_per_hour']:.2f} | "
                             f"{row['speedup']:.2f}x | {100 * row['mfu']:.1f}% |")
            else:
                lines.append(f"| {row['rung']} | {row['status']} | | | |")
        lines.append("")
    lines += ["## Loaders alone", "", "| loader | images / s | vs. engine |", "|---|---:|---:|"]
    for row in result["loaders"]:
        if row["status"] == "ok":
            lines.append(f"| {row['loader']} | {row['images_per_second']:.0f} | {row['vs_engine']:.1f}x |")
        else:
            lines.append(f"| {row['loader']} | {row['status']} | |")
    return "\n".join(lines) + "\n"


def bar_chart(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no bar chart", flush=True)
        return
    models = list(result["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = result["models"][model]["rungs"]
        ax.barh([r["rung"] for r in rows][::-1], [r.get("epochs_per_hour", 0) for r in rows][::-1])
        for i, r in enumerate(rows[::-1]):
            ax.text(r.get("epochs_per_hour", 0), i, f" {r['speedup']:.1f}x" if "speedup" in r else " skipped",
                    va="center")
        ax.set_title(f"{model} on {result['device']}")
        ax.set_xlabel("epochs per hour" + (" (a CPU run: not a measurement)" if result["mode"] != "cuda" else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- Main -------------------------------------------------------------------------------------------------------

def main(argv=None, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="a tiny ladder for a CPU: small CNN, PGD-2, 256 images")
    parser.add_argument("--models", nargs="+", help="default: preactresnet18 wrn34_10 (--quick: smallcnn)")
    parser.add_argument("--data", help="a prepared data directory to train on instead of synthetic images")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, help="timed iterations per rung (default 20; --quick: 2)")
    parser.add_argument("--out", help="write FILE.json, FILE.md and FILE.png")
    args = parser.parse_args(argv)
    if args.out:  # before the first rung: a result that cannot be written wastes the whole ladder
        check_output_file(os.path.splitext(args.out)[0] + ".json", "benchmark result", ("models",))
        inside = holds(os.path.dirname(os.path.abspath(args.out)))
        if inside:
            raise UsageError(f"--out {args.out} is inside {inside}: choose another --out")
    if args.data and not ffcv_available():
        parser.error("--data names betons, which only ffcv reads: install ffcv, or leave --data out (synthetic data)")
    device = torch.device(args.device)
    args.models = args.models or (["smallcnn"] if args.quick else ["preactresnet18", "wrn34_10"])
    args.iters = args.iters or (2 if args.quick else 20)
    args.images, args.batch_size, args.attack_steps = (256, 32, 2) if args.quick else (IMAGES_PER_EPOCH, 128, 10)
    # Let cuDNN pick its fastest convolution algorithms, for every rung alike.
    torch.backends.cudnn.benchmark = True

    import triton
    result = {"mode": device.type,
              "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
              "date": datetime.date.today().isoformat(), "batch_size": args.batch_size,
              "attack_steps": args.attack_steps, "iters": args.iters, "data": args.data or "synthetic",
              "models": {}, "loaders": []}
    stem = os.path.splitext(args.out)[0] if args.out else None

    def save():
        if stem:
            write_json(stem + ".json", result)

    peak = bf16_matmul_peak(device, args.quick)
    result["bf16_peak_tflops"] = peak / 1e12
    print(f"{result['device']}: bf16 matmul peak {peak / 1e12:.1f} TFLOP/s", flush=True)
    info, loader, train_labels = training_data(args, device)
    pool = batch_pool(loader, 8)
    for model in args.models:
        bench_model(args, model, info, train_labels, pool, device, peak, result, save)
    fastest = max((r.get("images_per_second", 0) for e in result["models"].values() for r in e["rungs"]), default=0)
    result["loaders"] = bench_loaders(args, info, loader, device, fastest)
    save()
    report = markdown(result)
    print(report)
    if stem:
        with open(stem + ".md", "w") as f:
            f.write(report)
        bar_chart(result, stem + ".png")
    failed = [r for e in result["models"].values() for r in e["rungs"] if r["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
