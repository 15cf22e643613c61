"""`fastsglr train`: the epoch loop around an engine's iteration, evaluation, checkpoints and the run directory.

A run directory holds config.json, metrics.jsonl (one row per epoch), last.pt (to resume), best.pt (highest test
PGD-20 accuracy), final.pt, summary.json (best / final / diff) and curves.png.
"""
import json
import os
import time

import torch
from tqdm import tqdm

from .checkpoint import load_resume_state, save_checkpoint
from .config import Config
from .data.datadir import read_data_dir
from .data.loaders import eval_subset_indices, make_loader, read_labels
from .engine import build_engine
from .errors import TrainingError, UsageError
from .files import write_json
from .labels import build_label_strategy
from .metrics import BestFinalTracker, TrainMeter
from .models import build_model
from .optim import build_optimizer, lr_at

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "last.prev.pt", "best.pt", "final.pt", "summary.json",
             "curves.png")


def _open_run_dir(cfg: Config, resume: bool, overwrite: bool):
    if resume:
        return
    taken = [f for f in RUN_FILES if os.path.exists(os.path.join(cfg.out, f))]
    if taken and not overwrite:
        raise UsageError(f"{cfg.out} already holds a run ({taken[0]}): pass --overwrite to replace it, "
                         f"or --resume {cfg.out} to continue it")
    try:
        os.makedirs(cfg.out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {cfg.out} ({exc.strerror}): choose another --out") from None
    for f in taken:
        os.remove(os.path.join(cfg.out, f))
    write_json(os.path.join(cfg.out, "config.json"), cfg.to_dict())


def _format_row(row):
    return (f"epoch {row['epoch']:4d} | lr {row['lr']:.4f} | loss {row['train_loss']:.4f} | "
            f"train adv {row['train_adv_acc']:5.1f} clean {row['train_clean_acc']:5.1f} | "
            f"test clean {row['test_clean_acc']:5.1f} pgd{row['eval_steps']} {row['test_pgd_acc']:5.1f} | "
            f"|g| {row['grad_norm']:.3f} | {row['epoch_seconds']:.1f}s")


def train(cfg: Config, *, resume=False, overwrite=False, log=print) -> dict:
    """Train (or resume) the run described by ``cfg``; returns the summary (best / final / diff)."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
    info = read_data_dir(cfg.data)
    _open_run_dir(cfg, resume, overwrite)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)

    model_spec = dict(name=cfg.model, num_classes=info.num_classes, in_channels=info.in_channels,
                      image_size=info.image_size, mean=info.mean, std=info.std)
    model = build_model(**model_spec).to(device)
    strategy = build_label_strategy(cfg, read_labels(info, "train").to(device), info.num_classes).to(device)
    optimizer = build_optimizer(model.parameters(), cfg)
    engine = build_engine(model, optimizer, strategy, cfg)
    train_loader = make_loader(cfg.loader, info, "train", cfg.batch_size, device, train=True, seed=cfg.seed)
    test_loader = make_loader(cfg.loader, info, "test", 2 * cfg.batch_size, device, train=False, seed=cfg.seed,
                              indices=eval_subset_indices(info.counts["test"], cfg.eval_subset, cfg.seed))
    tracker, start = BestFinalTracker(), 0

    def state(epoch):
        return {"config": cfg.to_dict(), "model_spec": model_spec, "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "strategy": strategy.state_dict(), "history": tracker.history,
                "rng": {"cpu": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None}}

    if resume:
        saved = load_resume_state(cfg.out, map_location=device, log=log)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        strategy.load_state_dict(saved["strategy"])
        tracker, start = BestFinalTracker(saved["history"]), saved["epoch"]
        torch.set_rng_state(saved["rng"]["cpu"])
        if saved["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        log(f"resuming {cfg.out} after epoch {start}")
    else:
        log("config: " + json.dumps(cfg.to_dict(), sort_keys=True))

    steps = len(train_loader)
    if steps == 0:
        raise UsageError(f"--batch-size {cfg.batch_size} exceeds the {info.counts['train']} training images: "
                         f"choose a smaller batch size")
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        strategy.start_epoch(epoch)
        train_loader.set_epoch(epoch)
        meter = TrainMeter(device)
        model.train()
        bar = tqdm(train_loader, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=None)
        for step, batch in enumerate(bar):
            lr = lr_at(cfg, epoch, step, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            engine.step(batch, meter, step)
        bad = meter.first_nonfinite_step()
        if bad is not None:
            raise TrainingError(f"the training loss became non-finite at epoch {epoch + 1}, step {bad + 1}: "
                                f"last.pt keeps epoch {epoch}; lower --lr or check the data")
        train_seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "lr": lr, **meter.read(),
               **engine.evaluate(test_loader, eps=cfg.eps, step_size=cfg.resolved_eval_step_size,
                                 steps=cfg.eval_steps),
               "eval_steps": cfg.eval_steps, "train_seconds": train_seconds,
               "epoch_seconds": time.perf_counter() - t0,
               "train_images_per_second": train_loader.num_samples / train_seconds}
        tracker.add(row)
        checkpoint = state(epoch + 1)
        # best.pt before last.pt: a run killed in between redoes this epoch identically and rewrites best.pt.
        if tracker.is_best_last:
            save_checkpoint(os.path.join(cfg.out, "best.pt"), checkpoint)
        save_checkpoint(os.path.join(cfg.out, "last.pt"), checkpoint, keep_previous=True)
        write_json(os.path.join(cfg.out, "metrics.jsonl"), tracker.history, lines=True)
        log(_format_row(row))

    save_checkpoint(os.path.join(cfg.out, "final.pt"), state(cfg.epochs))
    summary = tracker.summary()
    write_json(os.path.join(cfg.out, "summary.json"), summary)
    from .report import plot_curves

    plot_curves({os.path.basename(os.path.normpath(cfg.out)): tracker.history}, os.path.join(cfg.out, "curves.png"))
    return summary
