"""`fastsglr train`: the epoch loop around an engine's iteration, evaluation, checkpoints and the run directory.

A run directory holds config.json, metrics.jsonl (one row per epoch), last.pt (to resume), best.pt (highest test
PGD-20 accuracy), final.pt, summary.json (best / final / diff) and curves.png. Under torchrun every rank runs this
loop on its shard (``distributed.py``) and rank 0 alone writes the run directory.

What makes a run resumable exactly: each epoch's randomness depends only on (seed, epoch, rank) (the global RNG is
reseeded at the start of every epoch, the loaders derive order and augmentation from it too), so last.pt at an
epoch's end needs no RNG state. SIGINT / SIGTERM stop the run after the current step and write a mid-epoch last.pt
that also holds each rank's position: its RNG states, its metric sums and the rows of the label tables it touched.
"""

import contextlib
import functools
import json
import os
import sys
import time

import torch
from tqdm import tqdm

from .background_writer import BackgroundWriter, host_copy
from .checkpoint import check_same_data, estimate_run_bytes, load_resume_state, save_checkpoint
from .config import Config, n_epochs
from .data.datadir import read_data_dir
from .data.loaders import eval_subset_indices, make_loader, read_labels, train_steps
from .distill import Distillation
from .distributed import (
    barrier,
    broadcast_buffers_,
    check_ranks_agree,
    close_world,
    device_of,
    epoch_seed,
    init_world,
    per_rank_batch,
    sync_sample_tables,
)
from .engine import build_engine
from .errors import Interrupted, TrainingError, UsageError
from .files import check_free_space, check_writable_dir, resume_fix, write_json
from .labels import build_label_strategy
from .metrics import TEST_COLUMNS, BestFinalTracker, TrainMeter
from .models import build_model
from .optim import build_optimizer, lr_at
from .runlock import run_lock
from .sharpness import HessianTraceProbe
from .stop import GracefulStop
from .swa import WeightAverage, swapped_in
from .tensorboard_events import open_events, remove_events

RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "last.pt",
    "last.prev.pt",
    "best.pt",
    "final.pt",
    "summary.json",
    "curves.png",
)
FINAL_FILES = ("final.pt", "summary.json", "curves.png")
SLOW_CPU_RUN_SECONDS = 3600  # a CPU run paced to take longer than this gets a warning pointing at --preset demo


def _open_run_dir(cfg: Config, resume: bool, overwrite: bool, world, held: contextlib.ExitStack):
    """Every rank checks (so every rank fails alike on bad input); rank 0 takes the run directory's lock (held
    until ``held`` closes) and writes; the others wait for it. A resumed run takes the lock after its checks."""
    if resume:
        return
    taken = [f for f in RUN_FILES if os.path.exists(os.path.join(cfg.out, f))]
    if taken == ["config.json"]:  # a run stopped before its first checkpoint: nothing to lose, nothing to resume
        taken = []
    if taken and not overwrite:
        raise UsageError(
            f"{cfg.out} already holds a run ({taken[0]}): pass --overwrite to replace it, "
            f"or --resume {cfg.out} to continue it"
        )
    # Up front: a disk that fills mid-run costs the epochs since the last checkpoint.
    check_free_space(cfg.out, estimate_run_bytes(cfg.model), "a run")
    barrier(world)  # every rank has looked before rank 0 writes
    if world.is_main:
        check_writable_dir(cfg.out)
        held.enter_context(run_lock(cfg.out))  # before anything is removed: a run still writing there keeps it
        for f in taken:
            os.remove(os.path.join(cfg.out, f))
        remove_events(cfg.out)
        write_json(os.path.join(cfg.out, "config.json"), cfg.to_dict())
    barrier(world)


def _format_row(row, seconds_left):
    def test(key):
        return "    -" if row[key] is None else f"{row[key]:5.1f}"

    eta = f" | eta {_duration(seconds_left)}" if seconds_left else ""
    return (
        f"epoch {row['epoch']:4d} | lr {row['lr']:.4f} | loss {row['train_loss']:.4f} | "
        f"train adv {row['train_adv_acc']:5.1f} clean {row['train_clean_acc']:5.1f} | "
        f"test clean {test('test_clean_acc')} pgd{row['eval_steps']} {test('test_pgd_acc')} | "
        f"|g| {row['grad_norm']:.3f} | {row['epoch_seconds']:.1f}s{eta}"
    )


def _duration(seconds) -> str:
    """'45s', '12m05s', '3h20m'."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _warn_if_slow(log, seconds, steps_done, steps_left):
    """A CPU run set up to take hours (the paper's 200 epochs of PreAct ResNet-18, say) is almost always a newcomer
    who wanted the CPU demo: say so once, early, with the pace measured so far."""
    left = seconds / steps_done * steps_left
    if left > SLOW_CPU_RUN_SECONDS:
        log(
            f"warning: at this pace the run needs about {_duration(left)} more on this CPU; for a run of minutes "
            f"on a CPU use --preset demo (small CNN, 30 epochs, for the digits data)"
        )


def _summary(cfg, tracker) -> dict:
    # How the numbers were made: bf16 moves PGD's sign steps, so a summary says what it was trained with.
    return {**tracker.summary(), "engine": cfg.engine, "precision": cfg.precision, "device": cfg.device}


def _evaluates(cfg: Config, epoch: int) -> bool:
    """Every ``eval_every``-th epoch and the last one (``epoch`` counts from 0)."""
    return (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs


def _write_epoch(out, checkpoint, is_best, events):
    """An epoch's files, from a host copy of its state (in the background writer's thread)."""
    # best.pt before last.pt: a run killed in between redoes this epoch identically and rewrites best.pt.
    if is_best:
        save_checkpoint(os.path.join(out, "best.pt"), checkpoint)
    save_checkpoint(os.path.join(out, "last.pt"), checkpoint, keep_previous=True)
    write_json(os.path.join(out, "metrics.jsonl"), checkpoint["history"], lines=True, fix=resume_fix(out))
    if events:  # after metrics.jsonl, the source of truth; a resume writes what a stop in between left out
        events.add(checkpoint["history"][-1])


def read_history(run_dir) -> list:
    """A run's metrics.jsonl: one row per epoch."""
    path = os.path.join(run_dir, "metrics.jsonl")
    try:
        with open(path) as f:
            return [json.loads(line) for line in f]
    except ValueError as exc:
        raise UsageError(f"{path} is damaged ({exc}): delete {run_dir} to train the run again") from None


def _gather(world, value):
    """``value`` from every rank, in rank order (rank 0 writes them all into a mid-epoch checkpoint)."""
    if not world.launched:
        return [value]
    values = [None] * world.size
    torch.distributed.all_gather_object(values, value)
    return values


def train(cfg: Config, *, resume=False, overwrite=False, log=print) -> dict:
    """Train (or resume) the run described by ``cfg``; returns the summary (best / final / diff)."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
    world = init_world(cfg.device)
    try:
        with contextlib.ExitStack() as held:
            return _train(cfg, world, resume, overwrite, log if world.is_main else (lambda *_: None), held)
    finally:
        close_world(world)


def _train(cfg: Config, world, resume, overwrite, log, held) -> dict:
    if world.launched and cfg.awp_gamma:
        # Each rank would take AWP's proxy step on its own shard: the perturbations, and so the weights, drift apart.
        raise UsageError(
            "--awp-gamma is not supported under torchrun yet (each rank would perturb the weights "
            "from its own batch): train AWP in one process"
        )
    if world.launched and cfg.swa:
        raise UsageError("--swa is not supported under torchrun yet: train SWA in one process")
    info = read_data_dir(cfg.data, cfg.loader)
    batch_size = per_rank_batch(world, cfg.batch_size)
    if train_steps(info.counts["train"], batch_size, world) == 0:
        raise UsageError(
            f"--batch-size {cfg.batch_size} exceeds the {info.counts['train']} training images: "
            f"choose a smaller batch size"
        )
    train_labels = read_labels(info, "train")
    device = device_of(world, cfg.device)
    distill = Distillation.from_config(cfg, info, device)  # the teachers, checked before anything is written
    _open_run_dir(cfg, resume, overwrite, world, held)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: the autotuned convolutions pay back in a few steps
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank

    normalized = cfg.input_norm == "data"
    model_spec = dict(
        name=cfg.model,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        image_size=info.image_size,
        mean=info.mean if normalized else None,
        std=info.std if normalized else None,
    )
    model = build_model(**model_spec).to(device)
    strategy = build_label_strategy(cfg, train_labels.to(device), info.num_classes).to(device)
    optimizer = build_optimizer(model.parameters(), cfg)
    engine = build_engine(model, optimizer, strategy, cfg, world, distill)
    swa = WeightAverage(cfg) if cfg.swa else None
    train_loader = make_loader(
        cfg.loader, info, "train", batch_size, device, train=True, seed=cfg.seed, world=world, augment=cfg.augment
    )
    test_loader = make_loader(
        cfg.loader,
        info,
        "test",
        2 * batch_size,
        device,
        train=False,
        seed=cfg.seed,
        indices=eval_subset_indices(info.counts["test"], cfg.eval_subset, cfg.seed),
        world=world,
    )
    hessian = HessianTraceProbe(cfg, info, device) if cfg.hessian_probes else None
    tables = strategy.sample_tables()
    # Under torchrun, the rows of the label tables this rank updated since the last sync.
    visited = torch.zeros(info.counts["train"], dtype=torch.bool, device=device) if world.launched else None
    # Standard training (the KD teacher) keeps its best clean accuracy, as Chen et al.'s main_std.py.
    best_of = "test_clean_acc" if cfg.method == "standard" else "test_pgd_acc"
    tracker, start_epoch, start_step, ranks = BestFinalTracker(key=best_of), 0, 0, None
    steps = len(train_loader)

    def state(epoch, step=0, ranks=None):
        return {
            "config": cfg.to_dict(),
            "model_spec": model_spec,
            "dataset": info.dataset,
            "data_checksums": info.checksums,
            "epoch": epoch,
            "step": step,
            "world_size": world.size,
            "torchrun": world.launched,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "strategy": strategy.state_dict(),
            "swa": swa.state_dict() if swa else None,
            "history": tracker.history,
            "ranks": ranks,
        }

    if resume:
        saved = load_resume_state(cfg.out, world, map_location=device, log=log)
        check_same_data(
            saved,
            info.checksums,
            os.path.join(cfg.out, "last.pt"),
            cfg.data,
            "restore the data the run trained on, or start a new run with --out",
        )
        if saved["epoch"] >= cfg.epochs and all(os.path.isfile(os.path.join(cfg.out, f)) for f in FINAL_FILES):
            log(f"{cfg.out} finished its {n_epochs(cfg.epochs)} already: nothing to do (its files are unchanged)")
            return _summary(cfg, BestFinalTracker(saved["history"], key=best_of))
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        strategy.load_state_dict(saved["strategy"])
        if swa:
            swa.load_state_dict(saved["swa"])
        tracker, start_epoch = BestFinalTracker(saved["history"], key=best_of), saved["epoch"]
        start_step = saved["step"]
        ranks = saved["ranks"]
        if world.is_main:  # after the checks, which write nothing, and before the first write
            held.enter_context(run_lock(cfg.out))

    events = open_events(cfg.out, tracker.history, log) if world.is_main else None
    if events:
        held.callback(events.close)
    # A mid-epoch last.pt must not push the epoch's start out of last.prev.pt: a resume with another number of
    # ranks restarts the epoch from there.
    last_is_epoch_end = not start_step
    # Pace of this process's training steps, for the run's ETA and the slow-CPU warning.
    run_t0, steps_done, warned = time.perf_counter(), 0, cfg.device != "cpu"
    with GracefulStop(world, log) as stop, BackgroundWriter() as writer:
        if resume:
            log(f"resuming {cfg.out} at epoch {start_epoch + 1}" + (f", step {start_step + 1}" if start_step else ""))
        else:
            log("config: " + json.dumps(cfg.to_dict(), sort_keys=True))
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            meter, first_step = TrainMeter(device), 0
            if epoch == start_epoch and start_step:  # go on from this rank's position in the saved epoch
                first_step = start_step
                _restore_position(ranks[world.rank], model, meter, visited)
            else:
                torch.manual_seed(epoch_seed(cfg.seed, epoch, world.rank))
                if visited is not None:
                    visited.zero_()
            strategy.start_epoch(epoch)
            engine.objective.start_epoch(epoch)
            train_loader.set_epoch(epoch, first_step)
            model.train()
            # Quiet when the output goes to a file or a pipe: a log keeps the per-epoch rows only.
            bar = tqdm(
                train_loader,
                total=steps - first_step,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="batch",
                leave=False,
                disable=not (world.is_main and sys.stdout.isatty()),
            )
            for step, batch in enumerate(bar, start=first_step):
                lr = lr_at(cfg, epoch, step, steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                engine.step(batch, meter, step)
                if visited is not None:
                    visited[batch.index] = True
                steps_done += 1
                if not warned and time.perf_counter() - run_t0 > 10:  # after the first steps' warm-up
                    warned = True
                    _warn_if_slow(
                        log, time.perf_counter() - run_t0, steps_done, (cfg.epochs - epoch) * steps - step - 1
                    )
                signum = stop.requested()
                if signum:
                    bar.close()
                    writer.wait()  # the previous epoch's files are complete before last.pt is replaced
                    _save_interrupted(
                        cfg, world, state, epoch, step + 1, model, meter, visited, tables, last_is_epoch_end
                    )
                    raise Interrupted(
                        f"stopped after epoch {epoch + 1} step {step + 1} of {steps}; last.pt holds "
                        f"it: fastsglr train --resume {cfg.out}",
                        signum,
                    )
            bad = meter.first_nonfinite_step()
            if bad is not None:
                kept = f"last.pt keeps epoch {epoch}" if epoch else "no checkpoint was written"
                raise TrainingError(
                    f"the training loss became non-finite at epoch {epoch + 1}, step {bad + 1}: "
                    f"{kept}; lower --lr or check the data"
                )
            train_seconds = time.perf_counter() - t0
            sync_sample_tables(world, tables, visited)
            check_ranks_agree(world, model, tables, epoch + 1)
            broadcast_buffers_(model)  # every rank evaluates the BN statistics rank 0 saves
            row = {"epoch": epoch + 1, "lr": lr_at(cfg, epoch, steps - 1, steps), **meter.read()}
            t_eval = time.perf_counter()
            if swa and swa.due(epoch):  # the BN pass replays this epoch's batches (the loader's order is seeded)
                train_loader.set_epoch(epoch)
                swa.update(model, train_loader)
            if _evaluates(cfg, epoch):  # returns host floats: the evaluation has finished
                # Once SWA has averaged a model, that model is the one evaluated and reported (Chen et al.).
                averaged = swa and swa.averaged
                with swapped_in(model, swa.state) if averaged else contextlib.nullcontext():
                    row.update(
                        engine.evaluate(
                            test_loader, eps=cfg.eps, step_size=cfg.resolved_eval_step_size, steps=cfg.eval_steps
                        )
                    )
            else:  # no test accuracy (null in metrics.jsonl): the epoch cannot become best.pt
                row.update(dict.fromkeys(TEST_COLUMNS))
            eval_seconds = time.perf_counter() - t_eval
            row.update(
                {
                    **(hessian.measure(model, epoch) if hessian else {}),
                    "eval_steps": cfg.eval_steps,
                    **({"swa_averaged": swa.averaged} if swa else {}),
                    "ranks": world.size,
                    "train_seconds": train_seconds,
                    "eval_seconds": eval_seconds,
                    "epoch_seconds": time.perf_counter() - t0,
                    "train_images_per_second": world.size * train_loader.num_samples / train_seconds,
                }
            )
            tracker.add(row)
            if world.is_main:  # copied off the device now; written while the next epoch trains
                writer.submit(
                    functools.partial(_write_epoch, cfg.out, host_copy(state(epoch + 1)), tracker.is_best_last, events)
                )
            last_is_epoch_end = True
            seconds_per_epoch = (time.perf_counter() - run_t0) / (epoch + 1 - start_epoch)
            log(_format_row(row, seconds_per_epoch * (cfg.epochs - epoch - 1)))
            signum = stop.requested()  # a signal during evaluation: last.pt of this epoch is written on the way out
            if signum:
                raise Interrupted(
                    f"stopped after epoch {epoch + 1}; last.pt holds it: fastsglr train --resume {cfg.out}", signum
                )

    summary = _summary(cfg, tracker)
    if world.is_main:
        save_checkpoint(os.path.join(cfg.out, "final.pt"), state(cfg.epochs))
        write_json(os.path.join(cfg.out, "summary.json"), summary, fix=resume_fix(cfg.out))
        try:
            from .report import plot_curves
        except ImportError:  # matplotlib is an extra: a bare GPU box trains without it
            log("matplotlib is not installed: no curves.png")
        else:
            plot_curves(
                {os.path.basename(os.path.normpath(cfg.out)): tracker.history}, os.path.join(cfg.out, "curves.png")
            )
    barrier(world)
    return summary


def _save_interrupted(cfg, world, state, epoch, step, model, meter, visited, tables, last_is_epoch_end):
    """A mid-epoch last.pt: the tables merged over ranks, and each rank's RNG, BN statistics (per-rank BN drifts
    from rank 0's within a step), metric sums and touched rows."""
    sync_sample_tables(world, tables, visited)
    ranks = _gather(world, _position(model, meter, visited))
    if world.is_main:
        save_checkpoint(os.path.join(cfg.out, "last.pt"), state(epoch, step, ranks), keep_previous=last_is_epoch_end)
    barrier(world)


def _position(model, meter, visited) -> dict:
    """This rank's place in an epoch: what ``_restore_position`` needs to go on from it exactly."""
    return {
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state() if meter.sums.device.type == "cuda" else None,
        "buffers": {k: v.cpu() for k, v in model.named_buffers()},
        "meter_sums": meter.sums.cpu(),
        "first_bad_step": meter.first_bad_step.cpu(),
        "visited": None if visited is None else visited.cpu(),
    }


def _restore_position(position, model, meter, visited):
    torch.set_rng_state(position["rng_cpu"])
    if position["rng_cuda"] is not None:
        torch.cuda.set_rng_state(position["rng_cuda"])
    for name, buffer in model.named_buffers():  # this rank's BN statistics, not rank 0's
        buffer.copy_(position["buffers"][name])
    meter.sums.copy_(position["meter_sums"])
    meter.first_bad_step.copy_(position["first_bad_step"])
    if visited is not None:
        visited.copy_(position["visited"])
