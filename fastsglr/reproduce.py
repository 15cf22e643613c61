"""`fastsglr reproduce TABLE`: one of the paper's tables as a grid of training runs, evaluated and rendered in
markdown with the paper's number beside each measured one.

Tables: ``table2`` (PGD-AT with hard labels, LS, TE and SGLR), ``table3`` (PGD-AT and TRADES with and without SGLR,
CIFAR-10 and CIFAR-100), ``table4`` (SGLR's r x T ablation), ``noise`` (Table B.2: hard, LS and SGLR labels under
0-80% symmetric label noise), ``calibration`` (Table B.1: ECE on PGD-10 and Square examples, best and final) and
``transfer`` (Table B.3: PGD-AT and PGD-AT+SGLR targets under black-box PGD-10 and CW-inf examples crafted on
ResNet-34 and ResNet-50 sources trained with PGD-AT), ``wrn`` (Table B.4: PGD-AT and PGD-AT+SGLR on WRN-34-10) and
``schedules`` (Fig. B.7: vanilla PGD-AT under the piecewise and the cosine learning-rate schedule, per epoch: test
PGD accuracy, gradient norm and the Hessian trace of the training loss). A table's source runs are trained like its
other runs but only craft transfer examples: they fill no cell.

Data: ``data`` holds one directory per data set. Each of the table's data sets uses the directory of that data set;
a directory of a data set the paper does not use (digits, synthetic) stands in for every one that has none, so one
digits directory gives a quick look at any table. Digits runs use the ``demo`` preset (small CNN, eps 32/255), the
others the paper's settings and network: ResNet-18 fed raw [0, 1] inputs, as the authors' scripts train it
(``ARCH=resnet18``, no normalisation), or the table's own network (Table B.4: WRN-34-10) where the paper names one;
``model`` overrides the network of every run. Within a table, runs differ only in method, labels, the SGLR settings,
label noise and the learning-rate schedule.

SGLR comes in two variants (``sglr``): ``paper`` (Sec. 4 and Table 4's best: r 0.2, T 1.5, no warm-up) and
``sgls-code`` (the authors' released code: r 1, T 1, plain CE for the first 89 of 200 epochs). The paper does not say
which one made Tables 2 and 3 (the released code's README prints their final columns); their SGLR rows appear once per
variant (Table B.4's too: its ResNet-18 block repeats their numbers). A warm-up is stated for the paper's 200 epochs
and scales with a run's epochs, as the learning-rate milestones (fractions of the epochs) do. Table 4 ablates the
paper's r and T, so it runs the ``paper`` formula.

Every accuracy table shows two PGD-20s: the standard one (20 steps of eps/4 from a uniform random start) and the
authors' final evaluator ``pgd20-sgls`` (eps 0.031, step 0.003 at eps 8/255); the paper does not say which it
printed, so both carry its number. Each page also says which engine and precision trained its runs.

OUT holds ``runs/<data set>/<run>/`` (trainer run directories, plus cached evaluations ``eval_*.json``), ``data/``
(the noisy copies of ``noise``), ``<table>.md``, ``<table>.json`` and the figures. Running again resumes: finished
runs (summary.json) are skipped, interrupted ones (last.pt) resume, and an evaluation is reused while the
checkpoint's hash and the attack settings are unchanged. Tables given the same OUT share identical runs.
"""
import contextlib
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Callable

from . import paper_numbers as paper
from .checkpoint import resume_config
from .config import PRESETS, Config, apply_preset, n_epochs, validate
from .data.datadir import read_data_dir, sha256
from .data.noise import NOISE_DEFINITIONS
from .data.prepare import prepare
from .errors import UsageError
from .files import atomic_file, check_output_dir, write_json
from .report import PANELS, plot_curves, plot_per_epoch
from .robustness import REPORT_FORMAT, STANDARD, evaluate_checkpoint, resolve_device, sgls_pgd
from .trainer import train

import matplotlib.pyplot as plt  # noqa: E402  (after .report, which selects the file-only Agg backend)

PAPER_DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
PAPER_EPOCHS = 200
PAPER_MODEL = "ResNet-18"
# The paper's network as the authors' scripts train it: ARCH=resnet18 on raw [0, 1] inputs.
PAPER_NETWORK = dict(model="resnet18", input_norm="none")
# --sglr: which SGLR rows Tables 2 and 3 get. Each variant's settings are the preset of that name.
SGLR_VARIANTS = ("paper", "sgls-code")
SGLR_CHOICES = {"paper": ("paper",), "sgls-code": ("sgls-code",), "both": SGLR_VARIANTS}
SGLR_TABLES = ("table2", "table3", "wrn")
LABEL_NAMES = {"hard": "Hard Label", "ls": "Soft Label (LS)", "sglr": "Self-Guided Soft Label"}
NOISE_RATES = (0.0, 0.2, 0.4, 0.6, 0.8)
# Config fields a finished or interrupted run may differ in and still be the same run.
_NOT_THE_RUN = ("data", "device", "out")


@dataclass(frozen=True)
class Run:
    """One training run of a table: the cell(s) it fills, what sets it apart, and the paper's numbers for it."""

    dataset: str                # the paper's data set it stands for
    row: str
    column: str = ""
    overrides: tuple = ()       # (Config field, value) pairs
    noise: float = 0.0          # symmetric label-noise rate of its training data
    source: str = ""            # the row of the table's source run whose best.pt crafts its transfer examples
    paper: dict = field(default_factory=dict, hash=False)


@dataclass
class Measured:
    run_dir: str
    history: list               # metrics.jsonl rows
    evals: dict                 # "best" / "final" -> robustness report
    config: dict = field(default_factory=dict)  # the run's config.json


@dataclass
class Block:
    """A markdown table: rows of (label, [(measured, paper), ...])."""

    dataset: str
    corner: str
    columns: list
    rows: list
    digits: object = 1          # decimals: one for every column, or a tuple with one per column
    caption: str = ""           # after the data set in the heading, e.g. the transfer source


@dataclass(frozen=True)
class Table:
    title: str
    runs: tuple
    attacks: tuple              # what each evaluated checkpoint is attacked with
    checkpoints: tuple          # which checkpoints of each run are evaluated
    blocks: Callable            # [(Run, Measured)] -> [Block]
    notes: tuple = ()           # what a measured number is, where the paper leaves it open
    sources: tuple = ()         # runs trained only to craft the transfer examples of the runs naming them
    network: tuple = ()         # Config overrides of the paper's network for this table, where not ResNet-18
    network_name: str = PAPER_MODEL
    panels: tuple = PANELS      # the per-epoch curves of the runs' figure (report.plot_curves)


# ------------------------------------------------------------------------------------------------ the tables

def _run(dataset, row, column="", noise=0.0, paper=None, source="", **overrides) -> Run:
    return Run(dataset, row, column, tuple(sorted(overrides.items())), noise, source, paper or {})


def _attack(name, quantity="acc", scale=1.0):
    """A best / final metric: one number of a checkpoint's robustness report."""
    return lambda report: report["attacks"][name][quantity] * scale


def _final_acc(name):
    """A grid measure: the final checkpoint's accuracy under an attack."""
    return lambda m: m.evals["final"]["attacks"][name]["acc"]


# (the paper's metric, column name, value): both PGD-20s stand beside the paper's one PGD-20 number.
ACCURACY_METRICS = (("natural", "natural", _attack("clean")), ("pgd20", "PGD-20", _attack("pgd20")),
                    ("pgd20", "PGD-20 (SGLS)", _attack("pgd20-sgls")),
                    ("autoattack", "AutoAttack", _attack("autoattack")))
ACCURACY_ATTACKS = ("clean", "pgd20", "pgd20-sgls", "autoattack")
# CalibrationMeter reports ECE in percent; the paper prints fractions.
ECE_METRICS = (("pgd10", "PGD-10 ECE", _attack("pgd10", "ece", 0.01)),
               ("square", "Square ECE", _attack("square", "ece", 0.01)))
TRANSFER_METRICS = (("pgd10", "PGD-10", _attack("transfer-pgd10")), ("cw", "CW-inf", _attack("transfer-cw")))
# Table B.3's sources, larger ResNets trained with vanilla PGD-AT: paper name -> Config overrides. They stay ResNets
# on a stand-in data set too (they take 8x8 inputs): a source of the stand-in's own model (the small CNN) would be
# the AT target run itself, and its examples white-box.
TRANSFER_SOURCES = {"ResNet-34": {"model": "resnet34"}, "ResNet-50": {"model": "resnet50"}}


def _best_final_blocks(metrics, digits=1, caption=""):
    """Blocks with best / final / diff columns per metric, one block per data set and transfer source; ``caption``
    follows the data set in a heading without a source."""
    def blocks(results):
        out = []
        for dataset, source in dict.fromkeys((run.dataset, run.source) for run, _ in results):
            rows = []
            for run, m in ((r, m) for r, m in results if (r.dataset, r.source) == (dataset, source)):
                cells = []
                for key, _, value in metrics:
                    best, final = value(m.evals["best"]), value(m.evals["final"])
                    cells += zip((best, final, best - final), run.paper.get(key, (None, None, None)))
                rows.append((run.row, cells))
            columns = [f"{name} {c}" for _, name, _ in metrics for c in ("best", "final", "diff")]
            out.append(Block(dataset, "method", columns, rows, digits,
                             f"{source} → {PAPER_MODEL}" if source else caption))
        return out
    return blocks


def _grid_blocks(corner, measures):
    """One block whose rows are (run row, measure) and whose columns are the runs' columns; a measure is (name,
    the paper's key for it, value)."""
    def blocks(results):
        cell = {(run.row, run.column): (run, m) for run, m in results}
        rows, columns = dict.fromkeys(r.row for r, _ in results), list(dict.fromkeys(r.column for r, _ in results))
        table = [(f"{row} {name}".strip(), [(value(cell[row, c][1]), cell[row, c][0].paper.get(key))
                                            for c in columns])
                 for row in rows for name, key, value in measures]
        return [Block(results[0][0].dataset, corner, columns, table)]
    return blocks


def _runs(dataset, row, labels, sglr, paper_numbers, **overrides) -> tuple:
    """A row's run, or for an SGLR row one run per chosen variant, labelled with it ("PGD-AT+SGLR (paper)")."""
    if labels != "sglr":
        return (_run(dataset, row, labels=labels, paper=paper_numbers, **overrides),)
    return tuple(_run(dataset, f"{row} ({variant})", paper=paper_numbers, **{**PRESETS[variant], **overrides})
                 for variant in SGLR_CHOICES[sglr])


def _sglr_note(sglr) -> tuple:
    shown = {"paper": "(paper): r 0.2, T 1.5, no warm-up (Sec. 4, Table 4's best)",
             "sgls-code": "(sgls-code): the authors' released loss: r 1, T 1, plain CE for the first 89 of 200 "
                          "epochs (scaled with the epochs)"}
    return (f"SGLR rows: {'; '.join(shown[v] for v in SGLR_CHOICES[sglr])}; alpha 0.9, lambda 0.2 in both. The "
            "paper does not say which made this table; both stand beside its one number.",)


def _table2(sglr="both"):
    rows = (("PGD-AT", "hard"), ("PGD-AT+LS", "ls"), ("PGD-AT+TE", "te"), ("PGD-AT+SGLR", "sglr"))
    runs = tuple(run for row, labels in rows
                 for run in _runs("cifar10", row, labels, sglr, paper.TABLE2["cifar10"][row], method="pgd-at"))
    return Table("Table 2: PGD-AT with hard labels, label smoothing (r 0.2), temporal ensembling and SGLR",
                 runs, ACCURACY_ATTACKS, ("best", "final"), _best_final_blocks(ACCURACY_METRICS),
                 notes=_sglr_note(sglr) + ("AWP, KD-AT and KD-SWA, the paper's other rows, are not implemented "
                                           "yet: absent here.",))


def _table3(sglr="both"):
    rows = (("AT", "pgd-at", "hard"), ("AT+SGLR", "pgd-at", "sglr"), ("TRADES", "trades", "hard"),
            ("TRADES+SGLR", "trades", "sglr"))
    runs = tuple(run for ds in ("cifar10", "cifar100") for row, method, labels in rows
                 for run in _runs(ds, row, labels, sglr, paper.TABLE3[ds][row], method=method))
    return Table("Table 3: PGD-AT and TRADES with and without SGLR", runs, ACCURACY_ATTACKS, ("best", "final"),
                 _best_final_blocks(ACCURACY_METRICS), notes=_sglr_note(sglr))


def _table4():
    # At r = 0 the target is the one-hot label whatever T is: the three r = 0 cells share one run.
    runs = tuple(_run("cifar10", f"T={t:g}", f"r={r:g}", method="pgd-at", labels="sglr", r=r,
                      temperature=t if r else Config.temperature,
                      paper={"SA": paper.TABLE4[t]["SA"][i], "RA": paper.TABLE4[t]["RA"][i]})
                 for t in paper.TABLE4_T for i, r in enumerate(paper.TABLE4_R))
    measures = (("SA", "SA", _final_acc("clean")), ("RA", "RA", _final_acc("pgd20")),
                ("RA (SGLS PGD-20)", "RA", _final_acc("pgd20-sgls")))
    return Table("Table 4: SGLR ablation over the mixing weight r and the temperature T (the paper's SGLR)", runs,
                 ("clean", "pgd20", "pgd20-sgls"), ("final",), _grid_blocks("T", measures),
                 notes=("SA / RA: natural / PGD-20 accuracy of the final checkpoint (the paper does not say which "
                        "checkpoint; its r 0.2, T 1.5 cell equals Table 2's best natural and final PGD-20).",))


def _noise_gap(attack):
    """Final adversarial training accuracy (on the noisy training labels) minus final test accuracy under
    ``attack``."""
    return lambda m: m.history[-1]["train_adv_acc"] - _final_acc(attack)(m)


def _noise():
    runs = tuple(_run("cifar10", LABEL_NAMES[labels], f"{rate:.0%}", noise=rate, method="pgd-at", labels=labels,
                      paper={"": paper.NOISE[labels].get(rate)})
                 for labels in ("hard", "ls", "sglr") for rate in NOISE_RATES)
    measures = (("", "", _noise_gap("pgd20")), ("(SGLS PGD-20)", "", _noise_gap("pgd20-sgls")))
    return Table("Table B.2: hard, soft (LS, r 0.2) and self-guided soft labels under symmetric label noise", runs,
                 ("clean", "pgd20", "pgd20-sgls"), ("final",), _grid_blocks("labels / noise", measures),
                 notes=("Each cell: the final train - test robust accuracy gap (adversarial training accuracy on "
                        "the noisy labels minus test PGD-20 accuracy), our reading of Table B.2, whose text speaks "
                        "of the training and testing gap. The paper prints no 40% column.",
                        "Symmetric noise as the paper (Sec. 4) and the authors' code define it: a share eta of the "
                        "training labels is resampled uniformly over all K classes, so fewer than eta come out wrong; "
                        "a column is named by eta, and the realised wrong-label rates are listed below."))


def _calibration():
    rows = (("AT", "hard"), ("AT+SGLR", "sglr"))
    runs = tuple(_run("cifar10", row, method="pgd-at", labels=labels, paper=paper.CALIBRATION["cifar10"][row])
                 for row, labels in rows)
    return Table("Table B.1: expected calibration error on white-box (PGD-10) and black-box (Square) examples",
                 runs, ("pgd10", "square"), ("best", "final"), _best_final_blocks(ECE_METRICS, digits=2),
                 notes=("ECE as a fraction (the paper's unit), 15 equal-width confidence bins.",))


def _transfer():
    sources = tuple(_run("cifar10", name, method="pgd-at", labels="hard", **overrides)
                    for name, overrides in TRANSFER_SOURCES.items())
    rows = (("AT", "hard"), ("AT+SGLR", "sglr"))
    runs = tuple(_run("cifar10", row, source=source.row, method="pgd-at", labels=labels,
                      paper=paper.TRANSFER["cifar10"][source.row][row])
                 for source in sources for row, labels in rows)
    shown = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in overrides.items())
                      for name, overrides in TRANSFER_SOURCES.items())
    return Table("Table B.3: PGD-AT and PGD-AT+SGLR against black-box examples crafted on PGD-AT ResNet-34 / -50",
                 runs, ("transfer-pgd10", "transfer-cw"), ("best", "final"), _best_final_blocks(TRANSFER_METRICS),
                 notes=("Each cell: the target's accuracy (its best.pt and final.pt) on examples crafted on the "
                        "source's best.pt (the paper does not say which source checkpoint) by PGD-10 (10 steps of "
                        "eps/4) or CW-inf (PGD on the CW margin with eval's CW settings; the paper gives no steps).",
                        f"Sources ({shown}) are trained with PGD-AT on hard labels and the targets' other settings. "
                        "On a stand-in data set they stay ResNets, larger than its small-CNN targets as in the paper "
                        "(a small-CNN source would be the AT target itself).",),
                 sources=sources)


# Table B.4's WRN-34-10 ("ResNet-34-10" in the paper's table) on raw inputs, like its ResNet-18.
WRN_NETWORK = (("input_norm", "none"), ("model", "wrn34_10"))


def _wrn(sglr="both"):
    rows = (("AT", "hard"), ("AT+SGLR", "sglr"))
    runs = tuple(run for row, labels in rows
                 for run in _runs("cifar10", row, labels, sglr, paper.TABLE_B4["cifar10"][row], method="pgd-at"))
    return Table("Table B.4: PGD-AT and PGD-AT+SGLR on a large network (WRN-34-10)", runs, ACCURACY_ATTACKS,
                 ("best", "final"), _best_final_blocks(ACCURACY_METRICS, caption="WRN-34-10"),
                 notes=_sglr_note(sglr) + (
                     "WRN-34-10: depth 34, widen factor 10 (the table prints \"ResNet-34-10\"), fed raw [0, 1] inputs "
                     "like the authors' ResNet-18 (the paper does not say how it fed its WRN). On digits the demo "
                     "preset's small CNN stands in for it, as for every table's network (--model overrides).",
                     "Table B.4's ResNet-18 block repeats Table 3's AT and AT+SGLR rows: `fastsglr reproduce table3`."),
                 network=WRN_NETWORK, network_name="WRN-34-10")


# Fig. B.7: probes of Hutchinson's estimator per epoch (Config.hessian_probes; sharpness.py defines the loss).
SCHEDULE_HESSIAN_PROBES = 8
SCHEDULE_PANELS = (
    ("test robust accuracy (%)", (("test_pgd_acc", "", "-"),)),
    ("gradient norm ||grad_w L||", (("grad_norm", "", "-"),)),
    ("Hessian trace of the training loss", (("hessian_trace", "", "-"),)),
    ("learning rate", (("lr", "", "-"),)),
)


def _test_pgd(m):
    return f"test PGD-{m.history[0]['eval_steps']}"


def _schedule_blocks(results):
    """Fig. B.7 as tables: per run, the per-epoch test PGD accuracy's best / final / diff (robust overfitting) and
    its best epoch; then one row per epoch with each run's test PGD accuracy, gradient norm and Hessian trace."""
    dataset, pgd = results[0][0].dataset, _test_pgd(results[0][1])
    summary = []
    for run, m in results:
        accs = [row["test_pgd_acc"] for row in m.history]
        best = max(range(len(accs)), key=accs.__getitem__)  # the first of equals, as best.pt
        summary.append((run.row, [(v, None) for v in (accs[best], accs[-1], accs[best] - accs[-1],
                                                      m.history[best]["epoch"])]))
    blocks = [Block(dataset, "schedule", [f"{pgd} best", f"{pgd} final", f"{pgd} diff", "best epoch"], summary,
                    (1, 1, 1, 0), "test robust accuracy")]
    measures = ((pgd, "test_pgd_acc", 1), ("grad norm", "grad_norm", 3), ("tr(H)", "hessian_trace", 2))
    columns = [f"{run.row} {name}" for run, _ in results for name, _, _ in measures]
    rows = [(str(row["epoch"]), [(m.history[e][key], None) for _, m in results for _, key, _ in measures])
            for e, row in enumerate(results[0][1].history)]
    blocks.append(Block(dataset, "epoch", columns, rows, tuple(d for _ in results for _, _, d in measures),
                        "per epoch"))
    return blocks


def _schedules():
    runs = tuple(_run("cifar10", schedule, method="pgd-at", labels="hard", schedule=schedule,
                      hessian_probes=SCHEDULE_HESSIAN_PROBES) for schedule in ("piecewise", "cosine"))
    return Table("Fig. B.7: vanilla PGD-AT under the piecewise and the cosine learning-rate schedule", runs, (), (),
                 _schedule_blocks, panels=SCHEDULE_PANELS,
                 notes=("Fig. B.7 is a figure: the paper prints no numbers for it (every cell's paper side is –). "
                        "Its caption names no method; Sec. B.5 speaks of robust overfitting and of the stationary "
                        "stage of Sec. 3 (vanilla adversarial training), so both runs are PGD-AT with hard labels. "
                        "It names no network either: the paper's default, ResNet-18 (Sec. 4; Fig. 1, whose stages "
                        "it revisits, used PreAct ResNet-18: --model preactresnet18).",
                        "piecewise: lr x0.1 at 50% and 75% of the epochs; cosine: 0.5 lr (1 + cos(pi t)), t the "
                        "fraction of training done, annealed every step (the paper gives neither schedule's "
                        "details).",
                        "grad norm: the per-epoch mean over steps of the gradient norm ||grad_w L||_2 of the "
                        "training loss (Fig. 1's measure).",
                        f"tr(H): the Hessian trace of the adversarial training loss, CE(f(x'), y), on one fixed "
                        f"seeded training batch (batch-size images, no augmentation), x' crafted afresh each epoch "
                        f"by the training attack, the model in eval mode; Hutchinson's estimator with "
                        f"{SCHEDULE_HESSIAN_PROBES} Rademacher probes per epoch (the standard error is in "
                        f"metrics.jsonl as hessian_trace_sem)."))


TABLES = {"table2": _table2, "table3": _table3, "table4": _table4, "noise": _noise, "calibration": _calibration,
          "transfer": _transfer, "wrn": _wrn, "schedules": _schedules}


# ------------------------------------------------------------------------------------------------ data and runs

def _data_for(table_runs, data) -> dict:
    """The paper's data set -> the DataInfo standing for it (see the module docstring for the rule)."""
    infos = [read_data_dir(d) for d in ([data] if isinstance(data, str) else data)]
    by_name = {}
    for info in infos:
        if info.dataset in by_name:
            raise UsageError(f"--data names two {info.dataset} directories ({by_name[info.dataset].root}, "
                             f"{info.root}): pass one per data set")
        by_name[info.dataset] = info
    stand_ins = [i for i in infos if i.dataset not in PAPER_DATASETS]
    chosen = {}
    for dataset in dict.fromkeys(run.dataset for run in table_runs):
        if dataset not in by_name and not stand_ins:
            raise UsageError(f"this table needs {PAPER_DATASETS[dataset]}: pass --data with a directory from "
                             f"`fastsglr prepare --dataset {dataset}` (or a digits one for a quick look)")
        chosen[dataset] = by_name.get(dataset) or stand_ins[0]
    return chosen


def _with_noise(info, rate, out, root, log):
    """The data directory with ``rate`` symmetric label noise on its training labels, prepared once under OUT."""
    if not rate:
        return info
    path = os.path.join(out, "data", f"{info.dataset}-symmetric{rate:g}")
    try:
        noisy = read_data_dir(path)
        # The definition too: a copy written before "symmetric" meant resampling holds other labels.
        if (noisy.noise["rate"], noisy.noise["type"], noisy.noise.get("definition")) == \
                (rate, "symmetric", NOISE_DEFINITIONS["symmetric"]):
            return noisy
    except UsageError:
        pass
    if info.dataset in PAPER_DATASETS and not root:
        raise UsageError(f"reproduce noise writes noisy copies of {info.dataset}: pass --root, the folder with the raw "
                         f"CIFAR files that `fastsglr prepare` read")
    log(f"preparing {path}: {info.dataset} with {rate:.0%} symmetric label noise")
    # The same seed as the clean directory: synthetic data is generated from it (CIFAR and digits ignore it).
    prepare(info.dataset, path, root=root, label_noise=rate, noise_type="symmetric", seed=info.noise["seed"],
            synthetic_train=info.counts["train"], synthetic_test=info.counts["test"], log=log)
    return read_data_dir(path)


def _base_config(info, *, epochs, eval_subset, device, engine, precision=None, model=None) -> Config:
    cfg = Config(data=info.root, device=device)
    if info.dataset == "digits":
        cfg = apply_preset(cfg, "demo")
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


def _network(table: Table, info, model) -> dict:
    """The table's own network as Config overrides, where the paper's network is trained (see ``_base_config``):
    not on digits, whose demo preset's small CNN stands in, and not when ``model`` names every run's."""
    return {} if model or info.dataset == "digits" else dict(table.network)


def _run_config(base: Config, info, run: Run, out, network=None) -> Config:
    """The run's config; its directory is named by what differs from the base, so equal runs share a directory.
    ``network``: the table's own network (``_network``), overrides like the run's own, so the directory name says
    it and other tables' runs in OUT stay apart."""
    overrides = {**(network or {}), **dict(run.overrides)}
    if "sglr_warmup" in overrides:  # stated for the paper's 200 epochs: it scales like the lr milestones
        overrides["sglr_warmup"] = round(overrides["sglr_warmup"] * base.epochs / PAPER_EPOCHS)
    cfg = dataclasses.replace(base, **overrides)
    base_fields = base.to_dict()
    extra = [f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in sorted(cfg.to_dict().items())
             if k not in ("method", "labels") and v != base_fields[k]]
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


def _train_or_resume(cfg: Config, log):
    """Skip a finished run, resume an interrupted one, start a new one."""
    finished = all(os.path.isfile(os.path.join(cfg.out, f)) for f in ("summary.json", "best.pt", "final.pt"))
    started = os.path.isfile(os.path.join(cfg.out, "last.pt"))
    if finished or started:
        _check_same_run(cfg)
    if finished:
        log(f"{cfg.out}: finished, skipped")
        return
    log(f"{cfg.out}: {'resuming' if started else 'training'}")
    train(cfg, resume=started, overwrite=not started, log=log)


def _evaluate(cfg: Config, which, attacks, n, settings, checks, log, source=None) -> dict:
    """A checkpoint's robustness report, cached in the run directory under the hash of what determines it (so
    best.pt and final.pt, byte-identical when the last epoch was the best, are evaluated once). ``source``: the
    checkpoint transfer attacks craft their examples on."""
    path = os.path.join(cfg.out, f"{which}.pt")
    # The report format is part of the key: a report of an older format means other numbers, not a cache hit.
    request = {"format": REPORT_FORMAT, "checkpoint": sha256(path), "attacks": list(attacks), "n": n, "eps": cfg.eps,
               "checks": checks, "settings": dataclasses.asdict(settings), "source": source and sha256(source)}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:12]
    cache = os.path.join(cfg.out, f"eval_{key}.json")
    if os.path.isfile(cache):
        with open(cache) as f:
            with contextlib.suppress(ValueError):  # a damaged cache is evaluated again
                return json.load(f)
    report = evaluate_checkpoint(path, data=cfg.data, attacks=attacks, n=n, eps=cfg.eps, checks=checks, source=source,
                                 device=cfg.device, settings=settings, log=log)
    write_json(cache, report)
    return report


def _history(run_dir) -> list:
    path = os.path.join(run_dir, "metrics.jsonl")
    try:
        with open(path) as f:
            return [json.loads(line) for line in f]
    except ValueError as exc:
        raise UsageError(f"{path} is damaged ({exc}): delete {run_dir} to train the run again") from None


# ------------------------------------------------------------------------------------------------ rendering

def _cell(measured, printed, digits) -> str:
    if printed is None:
        return f"{measured:.{digits}f} / –"
    return f"{measured:.{digits}f} / {printed:.{digits}f} ({measured - printed:+.{digits}f})"


def _heading(dataset, info) -> str:
    name = PAPER_DATASETS[dataset]
    return name if info.dataset == dataset else f"{name} (measured on {info.dataset})"


def _block_heading(block: Block, infos) -> str:
    heading = _heading(block.dataset, infos[block.dataset])
    return f"{heading}: {block.caption}" if block.caption else heading


def render(title, blocks, infos, notes) -> str:
    """The markdown page: one table per block, then the notes."""
    lines = [f"# {title}", "", "Each cell: measured / paper (measured - paper); – where the paper has no number.", ""]
    for b in blocks:
        digits = b.digits if isinstance(b.digits, tuple) else (b.digits,) * len(b.columns)
        lines += [f"## {_block_heading(b, infos)}", "", f"| {b.corner} | " + " | ".join(b.columns) + " |",
                  "|---" * (len(b.columns) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(_cell(m, p, d) for (m, p), d in zip(cells, digits)) + " |"
                  for label, cells in b.rows]
        lines.append("")
    lines += ["Notes:", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def _evaluator_notes(table: Table, base_cfgs) -> list:
    """Which PGD-20s the table's numbers are, and which per-epoch PGD picked best.pt."""
    notes = []
    for eps in dict.fromkeys(cfg.eps for cfg in base_cfgs.values()):
        radius, step = sgls_pgd(eps)
        if "pgd20" in table.attacks:
            notes.append(f"PGD-20 at eps {eps * 255:.4g}/255: 20 steps of eps/4 ({eps * 255 / 4:.4g}/255) from a "
                         f"uniform random start (this project's standard). PGD-20 (SGLS): the authors' final "
                         f"evaluator (pgd_attack.py: eps 0.031, step 0.003 at eps 8/255, random start), here eps "
                         f"{radius:.4g}, step {step:.4g}. The paper does not say which PGD-20 it printed: both "
                         f"stand beside its number.")
    if "best" in table.checkpoints:
        shown = ", ".join(dict.fromkeys(f"PGD-{cfg.eval_steps} (steps of eps/4)" for cfg in base_cfgs.values()))
        notes.append(f"best: the checkpoint of the epoch with the highest per-epoch test {shown} accuracy; "
                     "diff = best - final.")
    return notes


def _network_note(dataset, info, cfg, table: Table) -> str:
    """``cfg``: the base config with the table's network in it, as the runs train it."""
    inputs = "raw [0, 1] inputs" if cfg.input_norm == "none" else "inputs normalised by the data's mean / std"
    if info.dataset != dataset:
        return (f"{info.dataset} stands in for {PAPER_DATASETS[dataset]}: model {cfg.model} on {inputs}, eps "
                f"{cfg.eps * 255:.4g}/255, {n_epochs(cfg.epochs)} (the paper: {table.network_name}, 8/255, "
                f"{PAPER_EPOCHS} epochs).")
    expected = {**PAPER_NETWORK, **dict(table.network)}
    if (cfg.model, cfg.input_norm) != (expected["model"], expected["input_norm"]):
        return (f"{PAPER_DATASETS[dataset]}: model {cfg.model} on {inputs} (the paper: {table.network_name} on raw "
                f"inputs).")
    trained_as = "" if table.network else " as the authors' scripts train it (ARCH=resnet18)"
    return f"{PAPER_DATASETS[dataset]}: model {cfg.model} on {inputs}, the paper's {table.network_name}{trained_as}."


def _trained_with(results) -> str:
    """The engines and precisions the table's runs were trained with, from their config.json."""
    used = dict.fromkeys(f"{m.config.get('engine', '?')} engine, {m.config.get('precision', '?')} on "
                         f"{m.config.get('device', '?')}" for _, m in results)
    return "Trained with: " + "; ".join(used) + (" (every run)." if len(used) == 1 else " (differs between runs).")


def _notes(table: Table, infos, base_cfgs, *, epochs, eval_subset, settings, checks, results, wrong_rates,
           model) -> list:
    """What sets this reproduction apart from the paper's, said plainly next to the numbers."""
    notes = list(table.notes)
    notes += [_network_note(dataset, info, dataclasses.replace(base_cfgs[dataset], **_network(table, info, model)),
                            table) for dataset, info in infos.items()]
    if wrong_rates:
        notes.append("Realised wrong-label rates: " + ", ".join(f"eta {rate:.0%}: {wrong:.1%}"
                                                               for rate, wrong in sorted(wrong_rates.items())) + ".")
    if epochs:
        plural = "s" if epochs != 1 else ""
        notes.append(f"Quick look: {epochs} training epoch{plural} per run (the paper: {PAPER_EPOCHS}).")
    if eval_subset and table.checkpoints:
        notes.append(f"Quick look: each checkpoint is evaluated on the first {eval_subset} test images, and best.pt "
                     f"is chosen on a seeded subset of {eval_subset} (the paper: the whole test set).")
    elif eval_subset:
        notes.append(f"Quick look: the per-epoch test accuracy is measured on a seeded subset of {eval_subset} test "
                     f"images (the paper: the whole test set).")
    weaker = [f"{k} {v} (standard {getattr(STANDARD, k)})" for k, v in dataclasses.asdict(settings).items()
              if v != getattr(STANDARD, k)]
    if weaker:
        notes.append("Attack settings differ from the standard ones: " + ", ".join(weaker) + ".")
    notes += _evaluator_notes(table, base_cfgs)
    notes.append(_trained_with(results))
    if not checks:
        notes.append("Gradient-masking sanity checks were skipped.")
    notes += [f"Sanity check failed (possible gradient masking), {run.dataset} {run.row} {run.column} {which}: "
              f"{check['message']}" for run, m in results for which, report in m.evals.items()
              for check in report["checks"] if not check["passed"]]
    return notes


def plot_noise_memorization(results, path, wrong_rates=None):
    """The paper's Fig. 4 per noise rate: adversarial training accuracy on the untouched portion (labels kept) and
    the share of the corrupted portion whose corrupted label is predicted (memorised), per label strategy.
    ``wrong_rates``: noise rate -> realised wrong-label rate, shown in the titles."""
    wrong_rates = wrong_rates or {}
    rates = sorted({run.noise for run, _ in results if run.noise})
    fig, axes = plt.subplots(2, len(rates), figsize=(4.2 * len(rates), 6.6), squeeze=False)
    for col, rate in enumerate(rates):
        for i, (run, m) in enumerate((r, m) for r, m in results if r.noise == rate):
            epochs = [row["epoch"] for row in m.history]
            for ax, key in zip(axes[:, col], ("train_adv_acc_untouched", "train_adv_memorized_corrupted")):
                plot_per_epoch(ax, epochs, [row[key] for row in m.history], color=f"C{i}", label=run.row)
        realised = f" ({wrong_rates[rate]:.1%} wrong)" if rate in wrong_rates else ""
        axes[0, col].set_title(f"{rate:.0%} noise{realised}: untouched portion", fontsize=9)
        axes[1, col].set_title(f"{rate:.0%} noise{realised}: corrupted portion", fontsize=9)
    for row, ylabel in enumerate(("adversarial accuracy (%)", "predicts the corrupted label (%)")):
        for ax in axes[row]:
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _figures(name, results, out, wrong_rates, panels) -> list:
    """The learning and gradient-norm curves of the table's runs on one page (each run once), and Fig. 4 for noise."""
    histories, seen = {}, set()
    for run, m in results:
        if m.run_dir not in seen:
            seen.add(m.run_dir)
            histories[" ".join(filter(None, (run.row, run.column)))] = m.history
    paths = [os.path.join(out, f"{name}_curves.png")]
    plot_curves(histories, paths[0], panels)
    if name == "noise":
        paths.append(os.path.join(out, "noise_fig4.png"))
        plot_noise_memorization(results, paths[1], wrong_rates)
    return paths


# ------------------------------------------------------------------------------------------------ entry point

def reproduce(table, data, out, *, epochs=None, eval_subset=None, root=None, settings=STANDARD, checks=True,
              device=None, engine=None, precision=None, model=None, sglr=None, log=print) -> dict:
    """Train (or resume) the table's runs in ``out``, evaluate them, write ``<table>.md``, ``<table>.json`` and
    the figures; returns the JSON content with the markdown under "markdown". ``engine`` and ``precision`` None:
    the config's defaults for the device; ``model`` None: ResNet-18 or the table's own network (the demo preset's
    model on digits); ``sglr`` None: both variants (table2, table3 and wrn only). With the fast engine every run of
    the table trains in this one process: the runs' numbers reach the compiled iteration as device tensors, so only
    a new structure (method, label strategy) compiles."""
    if table not in TABLES:
        raise UsageError(f"unknown table '{table}': choose one of {', '.join(TABLES)}")
    if sglr is not None and table not in SGLR_TABLES:
        raise UsageError(f"--sglr applies to {', '.join(SGLR_TABLES[:-1])} and {SGLR_TABLES[-1]} only ({table} has "
                         f"no SGLR variants): drop --sglr")
    for flag, value in (("epochs", epochs), ("eval-subset", eval_subset)):
        if value is not None and value < 1:
            raise UsageError(f"--{flag} {value} is out of range: it must be at least 1")
    spec = TABLES[table](sglr or "both") if table in SGLR_TABLES else TABLES[table]()
    device = resolve_device(device).type
    infos = _data_for(spec.sources + spec.runs, data)
    base_cfgs = {ds: validate(_base_config(info, epochs=epochs, eval_subset=eval_subset, device=device,
                                           engine=engine, precision=precision, model=model))
                 for ds, info in infos.items()}  # validated before anything is written: a bad --model stops here
    check_output_dir(out, "tables")
    wrong_rates = {}

    def trained(run) -> Config:
        info = _with_noise(infos[run.dataset], run.noise, out, root, log)
        if run.noise:
            wrong_rates[run.noise] = info.noise["realised_rate"]
        cfg = _run_config(dataclasses.replace(base_cfgs[run.dataset], data=os.path.abspath(info.root)), info, run, out,
                          _network(spec, infos[run.dataset], model))
        _train_or_resume(cfg, log)
        return cfg

    sources = {run.row: os.path.join(trained(run).out, "best.pt") for run in spec.sources}
    results = []
    for run in spec.runs:
        cfg = trained(run)
        source = sources[run.source] if run.source else None
        evals = {which: _evaluate(cfg, which, spec.attacks, eval_subset, settings, checks, log, source)
                 for which in spec.checkpoints}
        with open(os.path.join(cfg.out, "config.json")) as f:
            trained_config = json.load(f)
        results.append((run, Measured(cfg.out, _history(cfg.out), evals, trained_config)))

    blocks = spec.blocks(results)
    notes = _notes(spec, infos, base_cfgs, epochs=epochs, eval_subset=eval_subset, settings=settings, checks=checks,
                   results=results, wrong_rates=wrong_rates, model=model)
    markdown = render(spec.title, blocks, infos, notes)
    with atomic_file(os.path.join(out, f"{table}.md"), "w") as f:
        f.write(markdown)
    report = {
        "table": table, "title": spec.title, "notes": notes,
        "figures": _figures(table, results, out, wrong_rates, spec.panels),
        "blocks": [{"dataset": b.dataset, "heading": _block_heading(b, infos), "columns": b.columns,
                    "rows": [{"label": label, "measured": [m for m, _ in cells], "paper": [p for _, p in cells]}
                             for label, cells in b.rows]} for b in blocks],
        "runs": [{"dataset": run.dataset, "row": run.row, "column": run.column, "noise": run.noise,
                  "run_dir": m.run_dir, "engine": m.config.get("engine"), "precision": m.config.get("precision"),
                  **({"source": sources[run.source]} if run.source else {})}
                 for run, m in results],
        "sources": sources,
    }
    write_json(os.path.join(out, f"{table}.json"), report)
    log("\n" + markdown)
    log(f"wrote {os.path.join(out, table + '.md')} and {', '.join(report['figures'])}")
    return {**report, "markdown": markdown}
