"""Running a table's grid: each run's config and directory, train-or-resume, and the cached evaluations."""

import contextlib
import dataclasses
import hashlib
import json
import os

from ..checkpoint import resume_config
from ..config import Config, apply_preset, validate
from ..data.datadir import sha256
from ..errors import UsageError
from ..files import write_json
from ..robustness import REPORT_FORMAT, evaluate_checkpoint
from ..trainer import train
from .tables import PAPER_DATASETS, PAPER_EPOCHS, PAPER_NETWORK, Run, Table

# Config fields a finished or interrupted run may differ in and still be the same run.
_NOT_THE_RUN = ("data", "device", "out")


def _base_config(info, *, epochs, eval_subset, device, engine, precision=None, model=None) -> Config:
    cfg = Config(data=info.root, device=device)
    if cpu_stand_in(info):
        cfg = apply_preset(cfg, "standin")
    else:
        cfg = dataclasses.replace(cfg, **PAPER_NETWORK)
    if model:
        cfg = dataclasses.replace(cfg, model=model)
    # Both loaders yield the same batches; holding the split on the device spares worker processes.
    cfg = dataclasses.replace(cfg, loader="device")
    if engine:
        cfg = dataclasses.replace(cfg, engine=engine)
    if precision:
        cfg = dataclasses.replace(cfg, precision=precision)
    if epochs:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    if eval_subset:
        cfg = dataclasses.replace(cfg, eval_subset=eval_subset)
    return cfg


def cpu_stand_in(info) -> bool:
    """8x8 data the paper does not use (digits, ``prepare --dataset synthetic --synthetic-size 8``): trained with the
    ``standin`` preset, the paper's phenomenon at CPU scale, instead of the paper's network and settings."""
    return info.dataset not in PAPER_DATASETS and info.image_size <= 8


def _network(table: Table, info, model) -> dict:
    """The table's own network as Config overrides, where the paper's network is trained (see ``_base_config``):
    not on a CPU stand-in, whose preset's network stands in, and not when ``model`` names every run's."""
    return {} if model or cpu_stand_in(info) else dict(table.network)


def _run_config(base: Config, info, run: Run, out, network=None, teachers=None) -> Config:
    """The run's config; its directory is named by what differs from the base, so equal runs share a directory.
    ``network``: the table's own network (``_network``), overrides like the run's own, so the directory name says
    it and other tables' runs in OUT stay apart. ``teachers``: KD's teacher fields -> the teacher runs' directories,
    which the name shows as "kd" (they are runs of this OUT, named by the rest of the grid)."""
    overrides = {**(network or {}), **dict(run.overrides), **(teachers or {})}
    if "sglr_warmup" in overrides:  # stated for the paper's 200 epochs: it scales like the lr milestones
        overrides["sglr_warmup"] = round(overrides["sglr_warmup"] * base.epochs / PAPER_EPOCHS)
    cfg = dataclasses.replace(base, **overrides)
    base_fields = base.to_dict()
    extra = [
        f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}"
        for k, v in sorted(cfg.to_dict().items())
        if k not in ("method", "labels", *(teachers or {})) and v != base_fields[k]
    ]
    if teachers:
        extra.insert(0, "kd")
    data_key = info.dataset + (f"-{info.noise['type']}{info.noise['rate']:g}" if info.noise["rate"] else "")
    name = "_".join([cfg.method, cfg.labels, *extra])
    return validate(dataclasses.replace(cfg, out=os.path.join(out, "runs", data_key, name)))


def _check_same_run(cfg: Config):
    saved = resume_config(cfg.out).to_dict()
    ours = cfg.to_dict()
    differ = sorted(k for k in ours if k not in _NOT_THE_RUN and saved.get(k) != ours[k])
    if differ:
        shown = ", ".join(f"{k} {saved.get(k)} there vs {ours[k]} now" for k in differ)
        raise UsageError(f"{cfg.out} holds a run with other settings ({shown}): pass another --out")


def finished(run_dir) -> bool:
    """A run that trained to its end (what ``_train_or_resume`` skips)."""
    return all(os.path.isfile(os.path.join(run_dir, f)) for f in ("summary.json", "best.pt", "final.pt"))


def check_same_run(cfg: Config):
    """Refuse, before any work, a run directory of this grid that holds a run with other settings."""
    if finished(cfg.out) or os.path.isfile(os.path.join(cfg.out, "last.pt")):
        _check_same_run(cfg)


def _train_or_resume(cfg: Config, log):
    """Skip a finished run, resume an interrupted one, start a new one."""
    started = os.path.isfile(os.path.join(cfg.out, "last.pt"))
    check_same_run(cfg)
    if finished(cfg.out):
        log(f"{cfg.out}: finished, skipped")
        return
    log(f"{cfg.out}: {'resuming' if started else 'training'}")
    train(cfg, resume=started, overwrite=not started, log=log)


def eval_cache(cfg: Config, which, attacks, n, settings, checks, source=None) -> str:
    """Where the report of ``_evaluate`` is cached: in the run directory, under the hash of what determines it (so
    best.pt and final.pt, byte-identical when the last epoch was the best, are evaluated once). The checkpoints
    (``which`` and ``source``) must exist."""
    # The report format is part of the key: a report of an older format means other numbers, not a cache hit.
    request = {
        "format": REPORT_FORMAT,
        "checkpoint": sha256(os.path.join(cfg.out, f"{which}.pt")),
        "attacks": list(attacks),
        "n": n,
        "eps": cfg.eps,
        "checks": checks,
        "settings": dataclasses.asdict(settings),
        "source": source and sha256(source),
    }
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cfg.out, f"eval_{key}.json")


def _evaluate(cfg: Config, which, attacks, n, settings, checks, log, source=None) -> dict:
    """A checkpoint's robustness report, cached (``eval_cache``). ``source``: the checkpoint transfer attacks craft
    their examples on."""
    cache = eval_cache(cfg, which, attacks, n, settings, checks, source)
    if os.path.isfile(cache):
        with open(cache) as f:
            with contextlib.suppress(ValueError):  # a damaged cache is evaluated again
                return json.load(f)
    report = evaluate_checkpoint(
        os.path.join(cfg.out, f"{which}.pt"),
        data=cfg.data,
        attacks=attacks,
        n=n,
        eps=cfg.eps,
        checks=checks,
        source=source,
        device=cfg.device,
        settings=settings,
        log=log,
    )
    write_json(cache, report)
    return report
