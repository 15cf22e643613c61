"""Epochs per hour of adversarial training (PGD-10 + SGLR, batch 128, CIFAR-shaped data), climbing the fast
engine's ablation ladder in one run.

    python bench/epochs_per_hour.py [--quick] [--models preactresnet18 wrn34_10] [--data DIR] [--out FILE.json]
                                    [--only headline|end-to-end|ladder]

Every rung runs the same iteration (``iteration.train_step``) and adds one switch of ``fastsglr.engine.fast``:

    reference        ReferenceEngine: eager, fp32, the fused ops' plain PyTorch definitions (PLAIN_OPS); measured
                     twice: as PyTorch runs it by default (cuDNN convolutions in TF32, as the authors' code ran) and
                     in strict fp32 (TF32 off for convolutions and matrix products)
    +bf16 autocast   every forward under bf16 autocast
    +channels-last   NHWC model and inputs
    +torch.compile   the whole iteration compiled with fullgraph=True
    +fused kernels   the engine built with FUSED_OPS: the Triton kernels of fastsglr.kernels (pgd_step, sglr_loss)
    +CUDA graph      the compiled iteration captured once and replayed for every batch

What matters is measured first, so a run cut short still has it: the headline (the full fast configuration, the
top rung that runs here), then a whole ``fastsglr train`` epoch end to end, then the other rungs and the loaders.
For each rung: seconds per epoch (50,000 images: 390 iterations of 128), epochs per hour, speed-up over both
references, model FLOP utilisation (the FLOPs of one iteration, counted with FlopCounterMode, forward and backward,
attack included, per second, over the bf16 matrix-product peak measured in this run), the seconds its compilation
and CUDA-graph capture took, and whether its compiled iteration is one graph. The rungs time the engine on batches
already on the device; the loaders are timed alone (FFCV, GPU-resident), in images per second against the images
per second the fastest rung consumes: a loader below 1x would make the training wait.

The end-to-end figure is ``fastsglr.trainer.train`` itself, with the defaults of the device (on CUDA: fast engine,
bf16, CUDA graph), the device-held loader, and its per-epoch PGD-20 evaluation of the whole test set and
checkpoints: the wall time of its second epoch (the first includes compilation and capture) gives epochs per hour.
``--only`` runs one of the three parts and adds it to FILE.json when that exists (``gpu_suite.sh`` runs them as
separate stages, with its GPU tests and kernel benchmarks in between).

On a GPU, times come from CUDA events after a warm-up (compilation, capture). ``--quick`` runs a tiny ladder (a
small CNN, PGD-2, a few hundred images) in a few minutes on a CPU: rungs that need CUDA are reported as skipped and
times are perf_counter seconds of a CPU, which check that the ladder runs and measure nothing else.
Writes FILE.json (after every rung, so a run cut short keeps what it measured), FILE.md and FILE.png.
"""

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from typing import NamedTuple

import torch

from fastsglr.config import Config, validate
from fastsglr.data.beton import ffcv_available
from fastsglr.data.datadir import DataInfo, read_data_dir
from fastsglr.data.loaders import DeviceLoader, FFCVLoader
from fastsglr.data.prepare import prepare
from fastsglr.data.sources import channel_stats, load_raw
from fastsglr.engine.census import FlopCount
from fastsglr.engine.fast import WARMUP_STEPS, FastEngine, FastOptions
from fastsglr.engine.reference import ReferenceEngine
from fastsglr.errors import UsageError
from fastsglr.files import check_output_file, holds, write_json
from fastsglr.labels import build_label_strategy
from fastsglr.metrics import TrainMeter
from fastsglr.models import build_model
from fastsglr.optim import build_optimizer

IMAGES_PER_EPOCH = 50_000


# ---- The ladder -------------------------------------------------------------------------------------------------

REFERENCE_TF32, REFERENCE_STRICT = "reference eager fp32 (TF32 convolutions)", "reference eager strict fp32"


class Rung(NamedTuple):
    name: str
    options: FastOptions | None  # None: the reference engine
    strict_fp32: bool = False  # TF32 off for convolutions and matrix products (PyTorch: on for convolutions)


def ladder():
    """The rungs, each one switch more than the one before; the reference twice (PyTorch's default, strict fp32)."""
    rungs = [Rung(REFERENCE_TF32, None), Rung(REFERENCE_STRICT, None, strict_fp32=True)]
    options = FastOptions(precision="fp32", channels_last=False, compile=False, fused=False, cuda_graph=False)
    for name, switch in (
        ("+bf16 autocast", dict(precision="bf16")),
        ("+channels-last", dict(channels_last=True)),
        ("+torch.compile", dict(compile=True)),
        ("+fused kernels", dict(fused=True)),
        ("+CUDA graph", dict(cuda_graph=True)),
    ):
        options = dataclasses.replace(options, **switch)
        rungs.append(Rung(name, options))
    return rungs


def measuring_order(rungs, device):
    """The headline first (the top rung that runs here: the full fast configuration), then the ladder in order."""
    headline = [r for r in rungs if skip_reason(r.options, device) is None][-1]
    return [headline] + [r for r in rungs if r is not headline]


@contextlib.contextmanager
def fp32_mode(strict):
    """PyTorch's default (cuDNN convolutions in TF32, matrix products in fp32) or, ``strict``, fp32 throughout."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if strict:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


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
    """The GPU-resident loader over arrays already in memory (DeviceLoader reads them from a data directory)."""

    def __init__(self, info, images, labels, batch_size, device, seed=0):
        super(DeviceLoader, self).__init__(info, "train", batch_size, device, train=True, seed=seed)
        self.images = torch.from_numpy(images).to(self.device)
        self.labels = self.clean_labels = torch.from_numpy(labels).to(self.device)


def training_data(args, device):
    """(DataInfo, GPU-resident loader, training labels): a prepared data directory, or synthetic images."""
    if args.data:
        info = read_data_dir(args.data)
        loader = DeviceLoader(info, "train", args.batch_size, device, train=True, seed=0)
        return info, loader, loader.labels
    raw = load_raw("synthetic", synthetic_train=args.images, synthetic_test=1)
    mean, std = channel_stats(raw.train.images)
    info = DataInfo(
        root="",
        dataset="synthetic",
        classes=tuple(raw.classes),
        image_shape=raw.train.images.shape[1:],
        counts={"train": args.images, "test": 0},
        mean=tuple(mean),
        std=tuple(std),
        crop_padding=4,
        horizontal_flip=True,  # timed with CIFAR's augmentation, which flips
        noise={},
    )
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
    cfg = Config(
        model=name, attack_steps=args.attack_steps, batch_size=args.batch_size, labels="sglr", device=device.type
    )
    model = build_model(name, info.num_classes, info.in_channels, info.image_size, info.mean, info.std)
    model = model.to(device)
    strategy = build_label_strategy(cfg, train_labels, info.num_classes).to(device)
    optimizer = build_optimizer(model.parameters(), cfg)
    if options is None:
        return optimizer, ReferenceEngine(model, optimizer, strategy, cfg)
    return optimizer, FastEngine(model, optimizer, strategy, cfg, options)


def run_steps(optimizer, engine, pool, count, start=0):
    """``count`` iterations with the trainer's protocol: the learning rate set on the param groups every step. Each
    engine calls the op set it was built with (the rung's ``fused`` switch)."""
    meter = TrainMeter(pool[0].images.device)
    for step in range(start, start + count):
        for group in optimizer.param_groups:
            group["lr"] = 0.1
        engine.step(pool[step % len(pool)], meter, step)
    return meter


def iteration_flops(args, name, info, train_labels, pool, device):
    """FLOPs of one iteration (reference engine, plain ops) and of one forward per image."""
    optimizer, engine = build_run(args, name, info, train_labels, None, device)
    with FlopCount() as iteration:
        run_steps(optimizer, engine, pool, 1)
    with FlopCount() as forward, torch.no_grad():
        engine.model(pool[0].images)
    return iteration.total, forward.total / args.batch_size


def time_rung(args, name, info, train_labels, pool, options, device):
    """Seconds per iteration after the warm-up, wall seconds of the warm-up (compilation and capture happen there),
    and whether the compiled iteration is one graph (None: not compiled)."""
    optimizer, engine = build_run(args, name, info, train_labels, options, device)
    start = time.perf_counter()
    run_steps(optimizer, engine, pool, WARMUP_STEPS + 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    warmup = time.perf_counter() - start
    clock = Clock(device)
    clock.start()
    run_steps(optimizer, engine, pool, args.iters, start=WARMUP_STEPS + 1)
    return clock.stop() / args.iters, warmup, getattr(getattr(engine, "train_fn", None), "fullgraph", None)


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


def fill_speedups(entry):
    """Every measured rung's speed-up over each reference, once that reference is measured (else None)."""
    rows = {row["rung"]: row for row in entry["rungs"]}
    for key, reference in (
        ("speedup_vs_tf32", rows[REFERENCE_TF32]),
        ("speedup_vs_strict_fp32", rows[REFERENCE_STRICT]),
    ):
        for row in entry["rungs"]:
            if row["status"] == "ok":
                row[key] = (
                    reference["seconds_per_iteration"] / row["seconds_per_iteration"]
                    if reference["status"] == "ok"
                    else None
                )


def model_entry(args, model, info, train_labels, pool, device, result):
    """result["models"][model], made with every rung "not measured" the first time (rows in ladder order)."""
    if model not in result["models"]:
        iteration, forward = iteration_flops(args, model, info, train_labels, pool, device)
        result["models"][model] = {
            "flops_per_iteration": iteration,
            "forward_flops_per_image": forward,
            "forward_equivalents_per_image": iteration / (forward * args.batch_size),
            "rungs": [
                {
                    "rung": r.name,
                    "options": None if r.options is None else dataclasses.asdict(r.options),
                    "strict_fp32": r.strict_fp32,
                    "status": "not measured (the run was cut short)",
                }
                for r in ladder()
            ],
        }
    return result["models"][model]


def bench_model(args, model, info, train_labels, pool, device, peak, result, save, headline_only):
    """The headline rung of one model (``headline_only``), or every rung not measured yet, headline first; saved
    after every rung."""
    entry = model_entry(args, model, info, train_labels, pool, device, result)
    rows = {row["rung"]: row for row in entry["rungs"]}
    order = measuring_order(ladder(), device)
    rows[order[0].name]["headline"] = True
    for rung in order[:1] if headline_only else order:
        row = rows[rung.name]
        if row["status"] == "ok":  # measured by an earlier stage (gpu_suite.sh measures the headline first)
            continue
        reason = skip_reason(rung.options, device)
        if reason:
            row["status"] = reason
            print(f"{model:<16} {rung.name:<40} {reason}", flush=True)
            continue
        torch._dynamo.reset()  # a fresh compile cache per rung: rungs do not share recompilation limits
        try:
            with fp32_mode(rung.strict_fp32):
                seconds, warmup, one_graph = time_rung(args, model, info, train_labels, pool, rung.options, device)
        except Exception as exc:  # report the rung and climb on: one failure should not lose the others
            traceback.print_exc()
            row["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            save()
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        epoch = seconds * (IMAGES_PER_EPOCH // args.batch_size)
        compiled = rung.options is not None and (rung.options.compile or rung.options.cuda_graph)
        row.update(
            status="ok",
            seconds_per_iteration=seconds,
            seconds_per_epoch=epoch,
            epochs_per_hour=3600 / epoch,
            mfu=entry["flops_per_iteration"] / seconds / peak,
            images_per_second=args.batch_size / seconds,
            one_graph=one_graph,
            warmup_seconds=warmup,
            # the warm-up's steps at their steady-state cost, taken out: what compiling and capturing cost
            compile_capture_seconds=max(0.0, warmup - (WARMUP_STEPS + 1) * seconds) if compiled else None,
        )
        fill_speedups(entry)
        print(
            f"{model:<16} {rung.name:<40} {epoch:9.2f} s/epoch {3600 / epoch:8.2f} epochs/h  "
            f"vs TF32 reference {_times(row['speedup_vs_tf32'])}  vs strict fp32 "
            f"{_times(row['speedup_vs_strict_fp32'])}  MFU {100 * row['mfu']:5.1f}%"
            + (f"  compile+capture {row['compile_capture_seconds']:.1f} s" if compiled else ""),
            flush=True,
        )
        save()


def _times(speedup):
    return "-" if speedup is None else f"{speedup:.2f}x"


# ---- A whole `fastsglr train` epoch -----------------------------------------------------------------------------


def end_to_end(args, device):
    """Wall seconds of whole ``fastsglr train`` epochs (training, the per-epoch PGD-20 evaluation of the whole test
    set, the checkpoint handed to its writer) with this device's defaults and the device-held loader: the first
    epoch (compilation and capture included) and the second (what every later one costs)."""
    try:
        from fastsglr.trainer import train
    except ImportError as exc:  # a bare GPU box: the trainer needs tqdm (an install requirement of fastsglr)
        return {"status": f"skipped: {exc}"}
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if not data:
            data = os.path.join(tmp, "data")
            prepare(
                "synthetic", data, synthetic_train=args.images, synthetic_test=args.test_images, log=lambda *_: None
            )
        info = read_data_dir(data)
        cfg = validate(
            Config(
                data=data,
                model=args.models[0],
                attack_steps=args.attack_steps,
                batch_size=args.batch_size,
                labels="sglr",
                epochs=2,
                loader="device",
                device=device.type,
                out=os.path.join(tmp, "run"),
            )
        )
        stamps = []

        def log(line):
            if line.startswith("epoch "):
                stamps.append(time.perf_counter())
                print(line, flush=True)

        torch._dynamo.reset()
        start = time.perf_counter()
        train(cfg, log=log)
        with open(os.path.join(cfg.out, "metrics.jsonl")) as f:
            second = [json.loads(line) for line in f][1]
    epoch = stamps[1] - stamps[0]
    row = {
        "status": "ok",
        "data": args.data or "synthetic",
        "train_images": info.counts["train"],
        "test_images": info.counts["test"],
        "model": cfg.model,
        "engine": cfg.engine,
        "precision": cfg.precision,
        "loader": cfg.loader,
        "eval_steps": cfg.eval_steps,
        "first_epoch_seconds": stamps[0] - start,
        "epoch_seconds": epoch,
        "train_seconds": second["train_seconds"],
        "eval_seconds": second["eval_seconds"],
        "other_seconds": epoch - second["train_seconds"] - second["eval_seconds"],
        "epochs_per_hour": 3600 / epoch,
    }
    print(
        f"end to end: {epoch:.2f} s per `fastsglr train` epoch ({row['train_seconds']:.2f} training, "
        f"{row['eval_seconds']:.2f} PGD-{cfg.eval_steps} evaluation, {row['other_seconds']:.2f} other), "
        f"{row['epochs_per_hour']:.1f} epochs/h; first epoch {row['first_epoch_seconds']:.1f} s",
        flush=True,
    )
    return row


def bench_loaders(args, info, loader, device, engine_images_per_second):
    """The loaders alone: GPU-resident always; FFCV when installed (on a beton: --data's, or synthetic written now)."""
    batches = min(len(loader) - 1, 4 if args.quick else 100)
    rows = [{"loader": "gpu-resident", "status": "ok", "images_per_second": time_loader(loader, batches, device)}]
    if not ffcv_available():
        rows.append(
            {
                "loader": "ffcv",
                "status": "skipped: ffcv is not installed (the GPU-resident loader feeds the engine instead)",
            }
        )
    else:
        with tempfile.TemporaryDirectory() as tmp:
            if not args.data:
                from fastsglr.data.prepare import prepare

                prepare("synthetic", tmp, synthetic_train=args.images, synthetic_test=1, log=lambda *_: None)
            ffcv_info = read_data_dir(args.data or tmp, loader="ffcv")
            ffcv_loader = FFCVLoader(
                ffcv_info, "train", args.batch_size, device, train=True, seed=0, num_workers=os.cpu_count() or 1
            )
            rows.append(
                {"loader": "ffcv", "status": "ok", "images_per_second": time_loader(ffcv_loader, batches, device)}
            )
    for row in rows:
        if row["status"] == "ok":
            row["vs_engine"] = (
                row["images_per_second"] / engine_images_per_second if engine_images_per_second else float("nan")
            )
            print(
                f"loader {row['loader']:<14} {row['images_per_second']:12.0f} images/s "
                f"({row['vs_engine']:.1f}x what the engine consumes)",
                flush=True,
            )
        else:
            print(f"loader {row['loader']:<14} {row['status']}", flush=True)
    return rows


# ---- Reports ----------------------------------------------------------------------------------------------------


def markdown(result):
    lines = [
        f"# Epochs per hour on {result['device']}",
        "",
        f"torch {result['torch']}, triton {result['triton']}, {result['date']}; batch {result['batch_size']}, "
        f"PGD-{result['attack_steps']} + SGLR, {IMAGES_PER_EPOCH:,} images per epoch; "
        f"bf16 matmul peak measured: {result['bf16_peak_tflops']:.1f} TFLOP/s.",
        "",
    ]
    if result["mode"] != "cuda":
        lines += [
            "A CPU run: its times check that the ladder runs and measure nothing else. TF32 does not exist on a "
            "CPU: both references run the same fp32 code there, and their difference is noise.",
            "",
        ]
    e2e = result.get("end_to_end")
    if e2e:
        lines += ["## A whole `fastsglr train` epoch", ""]
        if e2e["status"] != "ok":
            lines += [e2e["status"], ""]
        else:
            lines += [
                f"{e2e['model']} on {e2e['data']} ({e2e['train_images']:,} training / {e2e['test_images']:,} "
                f"test images), engine {e2e['engine']}, {e2e['precision']}, loader {e2e['loader']}: "
                f"**{e2e['epoch_seconds']:.2f} s per epoch, {e2e['epochs_per_hour']:.1f} epochs per hour** "
                f"({e2e['train_seconds']:.2f} s training, {e2e['eval_seconds']:.2f} s PGD-{e2e['eval_steps']} "
                f"evaluation of the whole test set, {e2e['other_seconds']:.2f} s other: the checkpoint's host "
                f"copy, the wait for the previous write, the loaders); the first epoch, compilation and capture "
                f"included, took {e2e['first_epoch_seconds']:.1f} s.",
                "",
            ]
    for model, entry in result["models"].items():
        lines += [
            f"## {model}",
            "",
            f"{entry['flops_per_iteration'] / 1e12:.3f} TFLOP per iteration, "
            f"{entry['forward_flops_per_image'] / 1e9:.3f} GFLOP per forward per image: "
            f"{entry['forward_equivalents_per_image']:.1f} forward-equivalents per image. The headline (bold) "
            f"was measured first; speed-ups are over the reference as PyTorch runs it by default (cuDNN "
            f"convolutions in TF32) and over the strict fp32 reference.",
            "",
            "| rung | s / epoch | epochs / hour | vs reference (TF32) | vs strict fp32 | MFU | "
            "compile + capture s | one graph |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in entry["rungs"]:
            name = f"**{row['rung']}**" if row.get("headline") else row["rung"]
            if row["status"] == "ok":
                compile_seconds = row["compile_capture_seconds"]
                lines.append(
                    f"| {name} | {row['seconds_per_epoch']:.2f} | {row['epochs_per_hour']:.2f} | "
                    f"{_times(row['speedup_vs_tf32'])} | {_times(row['speedup_vs_strict_fp32'])} | "
                    f"{100 * row['mfu']:.1f}% | {'-' if compile_seconds is None else f'{compile_seconds:.1f}'}"
                    f" | {'-' if row['one_graph'] is None else ('yes' if row['one_graph'] else 'no')} |"
                )
            else:
                lines.append(f"| {name} | {row['status']} | | | | | | |")
        lines.append("")
    if result["loaders"]:
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
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = result["models"][model]["rungs"]
        ax.barh([r["rung"] for r in rows][::-1], [r.get("epochs_per_hour", 0) for r in rows][::-1])
        for i, r in enumerate(rows[::-1]):
            ax.text(
                r.get("epochs_per_hour", 0),
                i,
                f" {_times(r['speedup_vs_tf32'])}" if r["status"] == "ok" else " not measured",
                va="center",
            )
        ax.set_title(f"{model} on {result['device']}")
        ax.set_xlabel("epochs per hour" + (" (a CPU run: not a measurement)" if result["mode"] != "cuda" else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- Main -------------------------------------------------------------------------------------------------------

PARTS = ("headline", "end-to-end", "ladder")


def main(argv=None, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="a tiny ladder for a CPU: small CNN, PGD-2, 256 images")
    parser.add_argument("--models", nargs="+", help="default: preactresnet18 wrn34_10 (--quick: smallcnn)")
    parser.add_argument("--data", help="a prepared data directory to train on instead of synthetic images")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, help="timed iterations per rung (default 20; --quick: 2)")
    parser.add_argument(
        "--only",
        choices=PARTS,
        help="run one part (the headline rung of each model; a whole "
        "`fastsglr train` epoch; every other rung and the loaders) "
        "and add it to --out's FILE.json when that exists",
    )
    parser.add_argument("--out", help="write FILE.json, FILE.md and FILE.png")
    args = parser.parse_args(argv)
    if args.out:  # before the first rung: a result that cannot be written wastes the whole ladder
        check_output_file(os.path.splitext(args.out)[0] + ".json", "benchmark result", ("models",))
        inside = holds(os.path.dirname(os.path.abspath(args.out)))
        if inside:
            raise UsageError(f"--out {args.out} is inside {inside}: choose another --out")
    device = torch.device(args.device)
    args.models = args.models or (["smallcnn"] if args.quick else ["preactresnet18", "wrn34_10"])
    args.iters = args.iters or (2 if args.quick else 20)
    args.images, args.test_images, args.batch_size, args.attack_steps = (
        (256, 64, 32, 2) if args.quick else (IMAGES_PER_EPOCH, 10_000, 128, 10)
    )
    # Let cuDNN pick its fastest convolution algorithms, for every rung alike (the trainer does too).
    torch.backends.cudnn.benchmark = True
    parts = (args.only,) if args.only else PARTS

    import triton

    stem = os.path.splitext(args.out)[0] if args.out else None
    if args.only and stem and os.path.isfile(stem + ".json"):  # an earlier part of the same run (gpu_suite.sh)
        with open(stem + ".json") as f:
            result = json.load(f)
    else:
        result = {
            "mode": device.type,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__,
            "triton": triton.__version__,
            "python": platform.python_version(),
            "date": datetime.date.today().isoformat(),
            "batch_size": args.batch_size,
            "attack_steps": args.attack_steps,
            "iters": args.iters,
            "data": args.data or "synthetic",
            "models": {},
            "end_to_end": None,
            "loaders": [],
        }

    def save():
        if stem:
            write_json(stem + ".json", result)

    if "bf16_peak_tflops" not in result:
        result["bf16_peak_tflops"] = bf16_matmul_peak(device, args.quick) / 1e12
    peak = result["bf16_peak_tflops"] * 1e12
    print(f"{result['device']}: bf16 matmul peak {peak / 1e12:.1f} TFLOP/s", flush=True)
    if "headline" in parts or "ladder" in parts:
        info, loader, train_labels = training_data(args, device)
        pool = batch_pool(loader, 8)
    if "headline" in parts:
        for model in args.models:
            bench_model(args, model, info, train_labels, pool, device, peak, result, save, headline_only=True)
    if "end-to-end" in parts:
        result["end_to_end"] = end_to_end(args, device)
        save()
    if "ladder" in parts:
        for model in args.models:
            bench_model(args, model, info, train_labels, pool, device, peak, result, save, headline_only=False)
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
