"""Epochs per hour of adversarial training (PGD-10 + SGLR, batch 128, CIFAR-shaped data), climbing the fast
engine's ablation ladder in one run, from the conventional loop users run today.

    python bench/epochs_per_hour.py [--quick] [--models preactresnet18 wrn34_10] [--data DIR] [--out FILE.json]
                                    [--only headline|end-to-end|ladder] [--conventional-batches N]

    conventional loop the baseline as the authors' SGLS code and Rice et al.'s code run it (conventional_loop.py):
                     a torchvision DataLoader of PIL images in worker processes, RandomCrop / RandomHorizontalFlip /
                     ToTensor, the model eager in fp32 (TF32 convolutions on CUDA, PyTorch's default), an .item() per
                     step, the released code's SGLR loss; timed with its loader, on a data directory
    reference        ReferenceEngine: eager, fp32, the fused ops' plain PyTorch definitions (PLAIN_OPS); measured
                     twice: as PyTorch runs it by default (cuDNN convolutions in TF32, as the authors' code ran) and
                     in strict fp32 (TF32 off for convolutions and matrix products)

The reference and the rungs after it run the same iteration (``iteration.train_step``); each rung adds one switch
of ``fastsglr.engine.fast`` to the one before:

    +bf16 autocast   every forward under bf16 autocast
    +channels-last   NHWC model and inputs
    +torch.compile   the whole iteration compiled with fullgraph=True
    +fused kernels   the engine built with FUSED_OPS: the Triton kernels of fastsglr.kernels (pgd_step, sglr_loss)
    +CUDA graph      the compiled iteration captured once and replayed for every batch

What matters is measured first, so a run cut short still has it: the headline (the full fast configuration, the
top rung that runs here), then a whole ``fastsglr train`` epoch end to end beside a whole epoch of the conventional
loop, then the other rungs and the loaders.
For each rung: seconds per epoch (50,000 images: 390 iterations of 128), epochs per hour, speed-up over the
conventional loop and over both references, model FLOP utilisation (the FLOPs of one iteration, counted with
FlopCounterMode, forward and backward, attack included, per second, over the bf16 matrix-product peak measured in
this run), the seconds its compilation and CUDA-graph capture took, and whether its compiled iteration is one graph.
The engine rungs time the engine on batches already on the device; the conventional rung times its own training
loop, its DataLoader included; the loaders are timed alone (FFCV, GPU-resident), in images per second against the
images per second the fastest rung consumes: a loader below 1x would make the training wait.

The end-to-end figure is ``fastsglr.trainer.train`` itself, with the defaults of the device (on CUDA: fast engine,
bf16, CUDA graph), the device-held loader, and its per-epoch PGD-20 evaluation of the whole test set and
checkpoints: the wall time of its second epoch (the first includes compilation and capture) gives epochs per hour.
Beside it, on the same data directory with the same model, batch, training attack and evaluation attack, a whole
epoch of the conventional loop (training, its clean and PGD evaluations of the test set, its checkpoint) after a
few warm-up batches; the speed-up of ``fastsglr train`` end to end over it is the figure a user cares about. With
``--conventional-batches N`` that epoch is timed over its first N training batches and the same share of its test
batches, and the rest extrapolated: each pass's first batch (worker start-up included) as measured, the others at the
mean pace of the measured ones.
``--only`` runs one of the three parts and adds it to FILE.json when that exists (``gpu_suite.sh`` runs them as
separate stages, with its GPU tests and kernel benchmarks in between). Without ``--data``, the parts that need a data
directory (the conventional loop, the end-to-end epoch, FFCV) write synthetic images into a temporary one.

On a GPU, times come from CUDA events after a warm-up (compilation, capture); the conventional loop's from
perf_counter, which its ``.item()`` every step makes wait for the device. ``--quick`` runs a tiny ladder (a
small CNN, PGD-2, a few hundred images) in a few minutes on a CPU: rungs that need CUDA are reported as skipped and
times are perf_counter seconds of a CPU, which check that the ladder runs and measure only ratios on that CPU.
Writes FILE.json (after every rung, so a run cut short keeps what it measured), FILE.md and FILE.png.
"""

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from typing import NamedTuple

import torch

from fastsglr.config import Config, apply_preset, validate
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

CONVENTIONAL = "conventional loop (DataLoader, PIL, eager fp32)"
REFERENCE_TF32, REFERENCE_STRICT = "reference eager fp32 (TF32 convolutions)", "reference eager strict fp32"


class Rung(NamedTuple):
    name: str
    options: FastOptions | None  # None: the reference engine, or the conventional loop
    strict_fp32: bool = False  # TF32 off for convolutions and matrix products (PyTorch: on for convolutions)
    conventional: bool = False  # conventional_loop.py, with its DataLoader, instead of an engine


def ladder():
    """The rungs: the conventional loop, then the reference twice (PyTorch's default, strict fp32), then each rung
    one switch more than the one before."""
    rungs = [
        Rung(CONVENTIONAL, None, conventional=True),
        Rung(REFERENCE_TF32, None),
        Rung(REFERENCE_STRICT, None, strict_fp32=True),
    ]
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
    headline = [r for r in rungs if skip_reason(r, device) is None][-1]
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


def torchvision_missing():
    """Why the conventional loop cannot run here (a bare GPU box may lack torchvision and Pillow), or None."""
    try:
        import PIL  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as exc:
        return f"skipped: the conventional loop needs torchvision and Pillow ({exc})"
    return None


def skip_reason(rung, device):
    """Why a rung cannot run (or would only repeat the one before it) here; None if it runs."""
    if rung.conventional:
        return torchvision_missing()
    options = rung.options
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


def data_dir(args):
    """A data directory: ``--data``, or synthetic images (``args.images`` / ``args.test_images``) written once per
    run into the run's scratch folder."""
    if args.data:
        return args.data
    path = os.path.join(args.scratch, "data")
    if not os.path.isfile(os.path.join(path, "meta.json")):
        prepare("synthetic", path, synthetic_train=args.images, synthetic_test=args.test_images, log=lambda *_: None)
    return path


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


def conventional_loop(args, name, device):
    """The conventional loop (conventional_loop.py) on the run's data directory with the ``sgls-code`` preset and the
    run's model, batch, attack and evaluation attack, its model initialised as every rung's; and the epoch (from 1)
    where its SGLR starts, which the bench times: every rung and `fastsglr train` here run SGLR from the start."""
    # Beside this script, which runs as a script (also through runpy, and in gpu_suite.sh's safe-path mode, where
    # Python does not put the script's folder on sys.path); imported here, since it needs torchvision.
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    from conventional_loop import ConventionalLoop

    info = read_data_dir(data_dir(args))
    cfg = apply_preset(
        Config(model=name, attack_steps=args.attack_steps, batch_size=args.batch_size, device=device.type), "sgls-code"
    )
    torch.manual_seed(0)
    model = build_model(name, info.num_classes, info.in_channels, info.image_size, info.mean, info.std).to(device)
    loop = ConventionalLoop(cfg, info, model, device)
    return loop, loop.criterion.es


def time_conventional(args, name, device):
    """The conventional rung: seconds per training iteration after the warm-up, its DataLoader and ``.item()`` calls
    included, and wall seconds of the warm-up (worker start-up included), from one pass over the training batches."""
    loop, epoch = conventional_loop(args, name, device)
    warm = WARMUP_STEPS + 1
    stamps = loop.train_epoch(epoch, max_batches=warm + args.iters).stamps
    timed = len(stamps) - 1 - warm
    if timed < 1:
        raise RuntimeError(f"{len(stamps) - 1} training batches per epoch: the conventional rung needs {warm + 1}")
    return (stamps[-1] - stamps[warm]) / timed, stamps[warm] - stamps[0], None


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
    """Every measured rung's speed-up over the conventional loop and over each reference, once that one is measured
    (else None)."""
    rows = {row["rung"]: row for row in entry["rungs"]}
    for key, reference in (
        ("speedup_vs_conventional", rows[CONVENTIONAL]),
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
        reason = skip_reason(rung, device)
        if reason:
            row["status"] = reason
            print(f"{model:<16} {rung.name:<48} {reason}", flush=True)
            continue
        torch._dynamo.reset()  # a fresh compile cache per rung: rungs do not share recompilation limits
        try:
            with fp32_mode(rung.strict_fp32):
                if rung.conventional:
                    seconds, warmup, one_graph = time_conventional(args, model, device)
                else:
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
            f"{model:<16} {rung.name:<48} {epoch:9.2f} s/epoch {3600 / epoch:8.2f} epochs/h  "
            f"vs conventional {_times(row['speedup_vs_conventional'])}  "
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
    data = data_dir(args)
    info = read_data_dir(data)
    with tempfile.TemporaryDirectory() as tmp:
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


def extrapolated_seconds(stamps, batches):
    """Wall seconds of a pass over ``batches`` batches (a float: a partial last batch counts by its share) from the
    ``stamps`` of a pass over its first ones: the first batch (worker start-up included) as measured, the others at
    the mean pace of the measured ones after it. A whole pass is its own measurement."""
    measured = len(stamps) - 1
    if measured >= math.ceil(batches):
        return stamps[-1] - stamps[0]
    if measured == 1:
        return (stamps[1] - stamps[0]) * batches
    return stamps[1] - stamps[0] + (stamps[-1] - stamps[1]) / (measured - 1) * (batches - 1)


def conventional_epoch(args, device):
    """Wall seconds of a whole epoch of the conventional loop on the data of the end-to-end epoch, with its model,
    batch, training attack and evaluation attack: its training (SGLR on), the clean and the PGD evaluations of the
    whole test set, its checkpoint; after a warm-up of a few batches of each pass (cuDNN's autotuning, first
    allocations). With ``--conventional-batches N``: timed over N training batches and the same share of the test
    batches, the rest extrapolated."""
    reason = torchvision_missing()
    if reason:
        return {"status": reason}
    loop, epoch = conventional_loop(args, args.models[0], device)
    info = read_data_dir(data_dir(args))
    train_batches = info.counts["train"] / args.batch_size
    test_batches = info.counts["test"] / loop.test_loader.batch_size
    cap = args.conventional_batches or None
    test_cap = None if cap is None else max(2, math.ceil(cap * test_batches / train_batches))
    loop.train_epoch(epoch, max_batches=WARMUP_STEPS + 1)
    loop.validate_clean(max_batches=1)
    loop.evaluate_pgd(max_batches=1)
    train = loop.train_epoch(epoch + 1, max_batches=cap)
    clean = loop.validate_clean(max_batches=test_cap)
    pgd = loop.evaluate_pgd(max_batches=test_cap)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        loop.save_checkpoint(os.path.join(tmp, "checkpoint_latest.tar"), epoch + 1, pgd.accuracy)
        checkpoint = time.perf_counter() - start
    row = {
        "status": "ok",
        "data": args.data or "synthetic",
        "train_images": info.counts["train"],
        "test_images": info.counts["test"],
        "model": args.models[0],
        "workers": loop.train_loader.num_workers,
        "test_batch_size": loop.test_loader.batch_size,
        "eval_steps": loop.cfg.eval_steps,
        "train_batches_timed": len(train.stamps) - 1,
        "test_batches_timed": len(pgd.stamps) - 1,
        "extrapolated": len(train.stamps) <= math.ceil(train_batches) or len(pgd.stamps) <= math.ceil(test_batches),
        "train_seconds": extrapolated_seconds(train.stamps, train_batches),
        "eval_seconds": sum(extrapolated_seconds(p.stamps, test_batches) for p in (clean, pgd)),
        "checkpoint_seconds": checkpoint,
    }
    row["epoch_seconds"] = row["train_seconds"] + row["eval_seconds"] + row["checkpoint_seconds"]
    row["epochs_per_hour"] = 3600 / row["epoch_seconds"]
    timed = (
        f"; timed over {row['train_batches_timed']} training and {row['test_batches_timed']} test batches, the rest "
        f"extrapolated"
        if row["extrapolated"]
        else ""
    )
    print(
        f"conventional loop: {row['epoch_seconds']:.2f} s per epoch ({row['train_seconds']:.2f} training, "
        f"{row['eval_seconds']:.2f} clean + PGD-{row['eval_steps']} evaluation, {row['checkpoint_seconds']:.2f} "
        f"checkpoint), {row['epochs_per_hour']:.1f} epochs/h{timed}",
        flush=True,
    )
    return row


def bench_loaders(args, info, loader, device, engine_images_per_second):
    """The loaders alone: GPU-resident always; FFCV when installed (on the betons of the run's data directory)."""
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
        ffcv_info = read_data_dir(data_dir(args), loader="ffcv")
        ffcv_loader = FFCVLoader(
            ffcv_info, "train", args.batch_size, device, train=True, seed=0, num_workers=os.cpu_count() or 1
        )
        rows.append({"loader": "ffcv", "status": "ok", "images_per_second": time_loader(ffcv_loader, batches, device)})
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


def conventional_markdown(conventional, e2e):
    """The conventional loop's whole epoch, and the speed-up of `fastsglr train` end to end over it."""
    if conventional["status"] != "ok":
        return f"The conventional loop: {conventional['status']}."
    c = conventional
    text = (
        f"The conventional loop (bench/conventional_loop.py: a DataLoader of PIL images in {c['workers']} worker "
        f"processes, eager fp32, an `.item()` per step, the released SGLR loss, the clean and PGD-{c['eval_steps']} "
        f"evaluations in two passes of {c['test_batch_size']}-image batches) on the same data with the same model, "
        f"batch and attacks: **{c['epoch_seconds']:.2f} s per epoch, {c['epochs_per_hour']:.1f} epochs per hour** "
        f"({c['train_seconds']:.2f} s training, {c['eval_seconds']:.2f} s evaluation, {c['checkpoint_seconds']:.2f} s "
        f"checkpoint"
        + (
            f"; timed over {c['train_batches_timed']} training and {c['test_batches_timed']} test batches, the rest "
            f"extrapolated)."
            if c["extrapolated"]
            else ")."
        )
    )
    if e2e and e2e.get("speedup_vs_conventional"):
        text += (
            f" **`fastsglr train` end to end: {e2e['speedup_vs_conventional']:.2f}x the conventional loop's epochs "
            f"per hour**, measured side by side in this run."
        )
    return text


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
            "A CPU run: its times check that the ladder runs and measure this CPU only (the ratios between its "
            "rungs and loops on it; nothing about a GPU). TF32 does not exist on a CPU: both references run the "
            "same fp32 code there, and their difference is noise.",
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
    conventional = result.get("conventional")
    if conventional:
        lines += [conventional_markdown(conventional, e2e), ""]
    for model, entry in result["models"].items():
        lines += [
            f"## {model}",
            "",
            f"{entry['flops_per_iteration'] / 1e12:.3f} TFLOP per iteration, "
            f"{entry['forward_flops_per_image'] / 1e9:.3f} GFLOP per forward per image: "
            f"{entry['forward_equivalents_per_image']:.1f} forward-equivalents per image. The headline (bold) "
            f"was measured first; speed-ups are over the conventional loop's training (its DataLoader included), "
            f"over the reference as PyTorch runs it by default (cuDNN convolutions in TF32) and over the strict fp32 "
            f"reference.",
            "",
            "| rung | s / epoch | epochs / hour | vs conventional loop | vs reference (TF32) | vs strict fp32 | MFU | "
            "compile + capture s | one graph |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in entry["rungs"]:
            name = f"**{row['rung']}**" if row.get("headline") else row["rung"]
            if row["status"] == "ok":
                compile_seconds = row["compile_capture_seconds"]
                lines.append(
                    f"| {name} | {row['seconds_per_epoch']:.2f} | {row['epochs_per_hour']:.2f} | "
                    f"{_times(row['speedup_vs_conventional'])} | {_times(row['speedup_vs_tf32'])} | "
                    f"{_times(row['speedup_vs_strict_fp32'])} | "
                    f"{100 * row['mfu']:.1f}% | {'-' if compile_seconds is None else f'{compile_seconds:.1f}'}"
                    f" | {'-' if row['one_graph'] is None else ('yes' if row['one_graph'] else 'no')} |"
                )
            else:
                lines.append(f"| {name} | {row['status']} | | | | | | | |")
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
    parser.add_argument(
        "--conventional-batches",
        type=int,
        help="time the conventional loop's whole epoch over its first N training batches and the same share of its "
        "test batches, the rest extrapolated (0: the whole epoch; default 100, --quick: 0)",
    )
    parser.add_argument("--out", help="write FILE.json, FILE.md and FILE.png")
    args = parser.parse_args(argv)
    if args.out:  # before the first rung: a result that cannot be written wastes the whole ladder
        check_output_file(os.path.splitext(args.out)[0] + ".json", "benchmark result", ("models",))
        inside = holds(os.path.dirname(os.path.abspath(args.out)))
        if inside:
            raise UsageError(f"--out {args.out} is inside {inside}: choose another --out")
    with tempfile.TemporaryDirectory() as scratch:  # the synthetic data directory, when one is written
        args.scratch = scratch
        return run(args)


def run(args):
    device = torch.device(args.device)
    args.models = args.models or (["smallcnn"] if args.quick else ["preactresnet18", "wrn34_10"])
    args.iters = args.iters or (2 if args.quick else 20)
    if args.conventional_batches is None:
        args.conventional_batches = 0 if args.quick else 100
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
            "conventional": None,
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
        result["end_to_end"] = e2e = end_to_end(args, device)
        save()
        try:
            result["conventional"] = conventional = conventional_epoch(args, device)
        except Exception as exc:  # report it and go on, as a failed rung
            traceback.print_exc()
            result["conventional"] = conventional = {"status": f"failed: {type(exc).__name__}: {exc}".splitlines()[0]}
        if e2e["status"] == conventional["status"] == "ok":
            e2e["speedup_vs_conventional"] = conventional["epoch_seconds"] / e2e["epoch_seconds"]
            print(
                f"`fastsglr train` end to end: {e2e['speedup_vs_conventional']:.2f}x the conventional loop's epochs "
                f"per hour (same data, model, batch, attacks; measured side by side in this run)",
                flush=True,
            )
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
    rows = [r for e in result["models"].values() for r in e["rungs"]] + [result.get("conventional") or {}]
    return 1 if any(r.get("status", "").startswith("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
