"""The paper's tables as data: what a table's runs are (Run), how its measured numbers become markdown blocks
(Block, from each run's Measured), and one builder per table returning its spec (Table); ``TABLES`` names them."""

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from .. import paper_numbers as paper
from ..config import PRESETS, Config
from ..report import PANELS

PAPER_DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
PAPER_EPOCHS = 200
PAPER_MODEL = "ResNet-18"
# The paper's network as the authors' scripts train it: ARCH=resnet18 on raw [0, 1] inputs.
PAPER_NETWORK = dict(model="resnet18", input_norm="none")
# --sglr: which SGLR rows Tables 2 and 3 get. Each variant's settings are the preset of that name.
SGLR_VARIANTS = ("paper", "sgls-code")
SGLR_CHOICES = {"paper": ("paper",), "sgls-code": ("sgls-code",), "both": SGLR_VARIANTS}
SGLR_TABLES = ("table2", "table3", "wrn", "overfitting")
LABEL_NAMES = {"hard": "Hard Label", "ls": "Soft Label (LS)", "sglr": "Self-Guided Soft Label"}
NOISE_RATES = (0.0, 0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True)
class Run:
    """One training run of a table: the cell(s) it fills, what sets it apart, and the paper's numbers for it."""

    dataset: str  # the paper's data set it stands for
    row: str
    column: str = ""
    overrides: tuple = ()  # (Config field, value) pairs
    noise: float = 0.0  # symmetric label-noise rate of its training data
    source: str = ""  # the row of the table's source run whose best.pt crafts its transfer examples
    teachers: tuple = ()  # (Config field, row of the run whose directory it names): KD's teachers, trained first
    paper: dict = field(default_factory=dict, hash=False)


@dataclass
class Measured:
    run_dir: str
    history: list  # metrics.jsonl rows
    evals: dict  # "best" / "final" -> robustness report
    config: dict = field(default_factory=dict)  # the run's config.json


@dataclass
class Block:
    """A markdown table: rows of (label, [(measured, paper), ...])."""

    dataset: str
    corner: str
    columns: list
    rows: list
    digits: object = 1  # decimals: one for every column, or a tuple with one per column
    caption: str = ""  # after the data set in the heading, e.g. the transfer source


@dataclass(frozen=True)
class Table:
    title: str
    runs: tuple
    attacks: tuple  # what each evaluated checkpoint is attacked with
    checkpoints: tuple  # which checkpoints of each run are evaluated
    blocks: Callable  # [(Run, Measured)] -> [Block]
    notes: tuple = ()  # what a measured number is, where the paper leaves it open
    sources: tuple = ()  # runs trained only for other runs (transfer sources, KD teachers): they fill no cell
    network: tuple = ()  # Config overrides of the paper's network for this table, where not ResNet-18
    network_name: str = PAPER_MODEL
    panels: tuple = PANELS  # the per-epoch curves of the runs' figure (report.plot_curves)
    legend: str = "Each cell: measured / paper (measured - paper); – where the paper has no number."


def label(run: Run) -> str:
    """A run's name in a table: its row, and its column where it has one ("T=1.5 r=0.2")."""
    return " ".join(filter(None, (run.row, run.column)))


def _run(dataset, row, column="", noise=0.0, paper=None, source="", teachers=(), **overrides) -> Run:
    return Run(dataset, row, column, tuple(sorted(overrides.items())), noise, source, teachers, paper or {})


def _attack(name, quantity="acc", scale=1.0):
    """A best / final metric: one number of a checkpoint's robustness report."""
    return lambda report: report["attacks"][name][quantity] * scale


def _final_acc(name):
    """A grid measure: the final checkpoint's accuracy under an attack."""
    return lambda m: m.evals["final"]["attacks"][name]["acc"]


# (the paper's metric, column name, value): both PGD-20s stand beside the paper's one PGD-20 number.
ACCURACY_METRICS = (
    ("natural", "natural", _attack("clean")),
    ("pgd20", "PGD-20", _attack("pgd20")),
    ("pgd20", "PGD-20 (SGLS)", _attack("pgd20-sgls")),
    ("autoattack", "AutoAttack", _attack("autoattack")),
)
ACCURACY_ATTACKS = ("clean", "pgd20", "pgd20-sgls", "autoattack")
# CalibrationMeter reports ECE in percent; the paper prints fractions.
ECE_METRICS = (
    ("pgd10", "PGD-10 ECE", _attack("pgd10", "ece", 0.01)),
    ("square", "Square ECE", _attack("square", "ece", 0.01)),
)
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
            out.append(
                Block(dataset, "method", columns, rows, digits, f"{source} → {PAPER_MODEL}" if source else caption)
            )
        return out

    return blocks


def _grid_blocks(corner, measures):
    """One block whose rows are (run row, measure) and whose columns are the runs' columns; a measure is (name,
    the paper's key for it, value)."""

    def blocks(results):
        cell = {(run.row, run.column): (run, m) for run, m in results}
        rows, columns = dict.fromkeys(r.row for r, _ in results), list(dict.fromkeys(r.column for r, _ in results))
        table = [
            (f"{row} {name}".strip(), [(value(cell[row, c][1]), cell[row, c][0].paper.get(key)) for c in columns])
            for row in rows
            for name, key, value in measures
        ]
        return [Block(results[0][0].dataset, corner, columns, table)]

    return blocks


def _runs(dataset, row, labels, sglr, paper_numbers, **overrides) -> tuple:
    """A row's run, or for an SGLR row one run per chosen variant, labelled with it ("PGD-AT+SGLR (paper)")."""
    if labels != "sglr":
        return (_run(dataset, row, labels=labels, paper=paper_numbers, **overrides),)
    return tuple(
        _run(dataset, f"{row} ({variant})", paper=paper_numbers, **{**PRESETS[variant], **overrides})
        for variant in SGLR_CHOICES[sglr]
    )


def _cifar10_pgd_at_runs(rows, numbers, sglr) -> tuple:
    """The runs of PGD-AT rows (label, label strategy) on CIFAR-10, beside the paper's ``numbers`` of each row."""
    return tuple(
        run
        for row, labels in rows
        for run in _runs("cifar10", row, labels, sglr, numbers["cifar10"][row], method="pgd-at")
    )


def _sglr_note(sglr, printed=True) -> tuple:
    """``printed``: the paper prints a number beside the SGLR rows."""
    shown = {
        "paper": "(paper): r 0.2, T 1.5, no warm-up (Sec. 4, Table 4's best)",
        "sgls-code": "(sgls-code): the authors' released loss: r 1, T 1, plain CE for the first 89 of 200 "
        "epochs (scaled with the epochs)",
    }
    rows = f"SGLR rows: {'; '.join(shown[v] for v in SGLR_CHOICES[sglr])}; alpha 0.9, lambda 0.2 in both."
    if not printed:
        return (rows,)
    return (rows + " The paper does not say which made this table; both stand beside its one number.",)


_TE_NOTE = (
    "TE row as Dong et al.'s train_te.py: weight 300 on a mean over batch x classes, 0 and the ensemble frozen "
    "before epoch 90 of 200, sigmoid ramp-up to full weight at 150 (scaled with the epochs), the training "
    "attack maximising CE + the consistency term."
)


# Table 2's KD teachers: a standard-trained run (a source: it fills no cell) and the table's PGD-AT run.
STANDARD_TEACHER = "Standard (KD teacher)"
KD_TEACHERS = (("kd_teacher_adv", "PGD-AT"), ("kd_teacher_std", STANDARD_TEACHER))


def _kd_runs() -> tuple:
    """KD-AT and KD-SWA as Chen et al.'s main_adv.py runs them: PGD-AT with hard labels, the training attack with BN
    in train mode (their adversary perturbs the model after model.train()), the two teachers; KD-SWA adds --swa."""
    kd = dict(method="pgd-at", labels="hard", attack_bn_mode="train", teachers=KD_TEACHERS)
    numbers = paper.TABLE2["cifar10"]
    return (
        _run("cifar10", "KD-AT", paper=numbers["KD-AT"], **kd),
        _run("cifar10", "KD-SWA", paper=numbers["KD-SWA"], swa=True, **kd),
    )


_KD_NOTE = (
    "AWP row: Wu et al.'s PGD-AT setting, --awp-gamma 0.01 from the first epoch. KD-AT and KD-SWA rows as Chen et "
    "al.'s code (VITA-Group/Alleviate-Robust-Overfitting, main_adv.py and utils.py): loss 0.3 CE on the hard label "
    "+ 0.6 KD from this table's PGD-AT run (its best.pt, best robust accuracy) + 0.1 KD from a standard-trained run "
    "(--method standard, its best clean accuracy), KD = T^2 x soft-target CE at T 2, both teachers in eval mode on "
    "the adversarial input, the training attack with BN in train mode; KD-SWA also averages the weights after every "
    "epoch from epoch 55 of 200 (scaled with the epochs), recomputes the average's BN statistics on the training "
    "set, and reports the average (best among the averaged epochs)."
)


def _table2(sglr="both"):
    rows = (("PGD-AT", "hard"), ("PGD-AT+LS", "ls"), ("PGD-AT+TE", "te"), ("PGD-AT+SGLR", "sglr"))
    awp = _run("cifar10", "AWP", paper=paper.TABLE2["cifar10"]["AWP"], method="pgd-at", labels="hard", awp_gamma=0.01)
    runs = _cifar10_pgd_at_runs(rows, paper.TABLE2, sglr) + (awp,) + _kd_runs()
    return Table(
        "Table 2: PGD-AT with hard labels, label smoothing (r 0.2), temporal ensembling and SGLR; AWP, KD-AT, KD-SWA",
        runs,
        ACCURACY_ATTACKS,
        ("best", "final"),
        _best_final_blocks(ACCURACY_METRICS),
        notes=_sglr_note(sglr) + (_TE_NOTE, _KD_NOTE),
        sources=(_run("cifar10", STANDARD_TEACHER, method="standard", labels="hard"),),
    )


def _table3(sglr="both"):
    rows = (
        ("AT", "pgd-at", "hard"),
        ("AT+SGLR", "pgd-at", "sglr"),
        ("TRADES", "trades", "hard"),
        ("TRADES+SGLR", "trades", "sglr"),
    )
    runs = tuple(
        run
        for ds in ("cifar10", "cifar100")
        for row, method, labels in rows
        for run in _runs(ds, row, labels, sglr, paper.TABLE3[ds][row], method=method)
    )
    return Table(
        "Table 3: PGD-AT and TRADES with and without SGLR",
        runs,
        ACCURACY_ATTACKS,
        ("best", "final"),
        _best_final_blocks(ACCURACY_METRICS),
        notes=_sglr_note(sglr),
    )


def _table4():
    # At r = 0 the target is the one-hot label whatever T is: the three r = 0 cells share one run.
    runs = tuple(
        _run(
            "cifar10",
            f"T={t:g}",
            f"r={r:g}",
            method="pgd-at",
            labels="sglr",
            r=r,
            temperature=t if r else Config.temperature,
            paper={"SA": paper.TABLE4[t]["SA"][i], "RA": paper.TABLE4[t]["RA"][i]},
        )
        for t in paper.TABLE4_T
        for i, r in enumerate(paper.TABLE4_R)
    )
    measures = (
        ("SA", "SA", _final_acc("clean")),
        ("RA", "RA", _final_acc("pgd20")),
        ("RA (SGLS PGD-20)", "RA", _final_acc("pgd20-sgls")),
    )
    return Table(
        "Table 4: SGLR ablation over the mixing weight r and the temperature T (the paper's SGLR)",
        runs,
        ("clean", "pgd20", "pgd20-sgls"),
        ("final",),
        _grid_blocks("T", measures),
        notes=(
            "SA / RA: natural / PGD-20 accuracy of the final checkpoint (the paper does not say which "
            "checkpoint; its r 0.2, T 1.5 cell equals Table 2's best natural and final PGD-20).",
        ),
    )


def _noise_gap(attack):
    """Final adversarial training accuracy (on the noisy training labels) minus final test accuracy under
    ``attack``."""
    return lambda m: m.history[-1]["train_adv_acc"] - _final_acc(attack)(m)


def _noise():
    runs = tuple(
        _run(
            "cifar10",
            LABEL_NAMES[labels],
            f"{rate:.0%}",
            noise=rate,
            method="pgd-at",
            labels=labels,
            paper={"": paper.NOISE[labels].get(rate)},
        )
        for labels in ("hard", "ls", "sglr")
        for rate in NOISE_RATES
    )
    measures = (("", "", _noise_gap("pgd20")), ("(SGLS PGD-20)", "", _noise_gap("pgd20-sgls")))
    return Table(
        "Table B.2: hard, soft (LS, r 0.2) and self-guided soft labels under symmetric label noise",
        runs,
        ("clean", "pgd20", "pgd20-sgls"),
        ("final",),
        _grid_blocks("labels / noise", measures),
        notes=(
            "Each cell: the final train - test robust accuracy gap (adversarial training accuracy on "
            "the noisy labels minus test PGD-20 accuracy), our reading of Table B.2, whose text speaks "
            "of the training and testing gap. The paper prints no 40% column.",
            "Symmetric noise as the paper (Sec. 4) and the authors' code define it: a share eta of the "
            "training labels is resampled uniformly over all K classes, so fewer than eta come out wrong; "
            "a column is named by eta, and the realised wrong-label rates are listed below.",
        ),
    )


def _calibration():
    rows = (("AT", "hard"), ("AT+SGLR", "sglr"))
    runs = tuple(
        _run("cifar10", row, method="pgd-at", labels=labels, paper=paper.CALIBRATION["cifar10"][row])
        for row, labels in rows
    )
    return Table(
        "Table B.1: expected calibration error on white-box (PGD-10) and black-box (Square) examples",
        runs,
        ("pgd10", "square"),
        ("best", "final"),
        _best_final_blocks(ECE_METRICS, digits=2),
        notes=("ECE as a fraction (the paper's unit), 15 equal-width confidence bins.",),
    )


def _transfer():
    sources = tuple(
        _run("cifar10", name, method="pgd-at", labels="hard", **overrides)
        for name, overrides in TRANSFER_SOURCES.items()
    )
    rows = (("AT", "hard"), ("AT+SGLR", "sglr"))
    runs = tuple(
        _run(
            "cifar10",
            row,
            source=source.row,
            method="pgd-at",
            labels=labels,
            paper=paper.TRANSFER["cifar10"][source.row][row],
        )
        for source in sources
        for row, labels in rows
    )
    shown = "; ".join(
        f"{name}: " + ", ".join(f"{k} {v}" for k, v in overrides.items())
        for name, overrides in TRANSFER_SOURCES.items()
    )
    return Table(
        "Table B.3: PGD-AT and PGD-AT+SGLR against black-box examples crafted on PGD-AT ResNet-34 / -50",
        runs,
        ("transfer-pgd10", "transfer-cw"),
        ("best", "final"),
        _best_final_blocks(TRANSFER_METRICS),
        notes=(
            "Each cell: the target's accuracy (its best.pt and final.pt) on examples crafted on the "
            "source's best.pt (the paper does not say which source checkpoint) by PGD-10 (10 steps of "
            "eps/4) or CW-inf (PGD on the CW margin with eval's CW settings; the paper gives no steps).",
            f"Sources ({shown}) are trained with PGD-AT on hard labels and the targets' other settings. "
            "On a stand-in data set they stay ResNets, larger than its small-CNN targets as in the paper "
            "(a small-CNN source would be the AT target itself).",
        ),
        sources=sources,
    )


# Table B.4's WRN-34-10 ("ResNet-34-10" in the paper's table) on raw inputs, like its ResNet-18.
WRN_NETWORK = (("input_norm", "none"), ("model", "wrn34_10"))


def _wrn(sglr="both"):
    rows = (("AT", "hard"), ("AT+SGLR", "sglr"))
    runs = _cifar10_pgd_at_runs(rows, paper.TABLE_B4, sglr)
    return Table(
        "Table B.4: PGD-AT and PGD-AT+SGLR on a large network (WRN-34-10)",
        runs,
        ACCURACY_ATTACKS,
        ("best", "final"),
        _best_final_blocks(ACCURACY_METRICS, caption="WRN-34-10"),
        notes=_sglr_note(sglr)
        + (
            'WRN-34-10: depth 34, widen factor 10 (the table prints "ResNet-34-10"), fed raw [0, 1] inputs '
            "like the authors' ResNet-18 (the paper does not say how it fed its WRN). On an 8x8 CPU stand-in "
            "the standin preset's network stands in for it, as for every table's network (--model overrides).",
            "Table B.4's ResNet-18 block repeats Table 3's AT and AT+SGLR rows: `fastsglr reproduce table3`.",
        ),
        network=WRN_NETWORK,
        network_name="WRN-34-10",
    )


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
        summary.append(
            (run.row, [(v, None) for v in (accs[best], accs[-1], accs[best] - accs[-1], m.history[best]["epoch"])])
        )
    blocks = [
        Block(
            dataset,
            "schedule",
            [f"{pgd} best", f"{pgd} final", f"{pgd} diff", "best epoch"],
            summary,
            (1, 1, 1, 0),
            "test robust accuracy",
        )
    ]
    measures = ((pgd, "test_pgd_acc", 1), ("grad norm", "grad_norm", 3), ("tr(H)", "hessian_trace", 2))
    columns = [f"{run.row} {name}" for run, _ in results for name, _, _ in measures]
    rows = [
        (str(row["epoch"]), [(m.history[e][key], None) for _, m in results for _, key, _ in measures])
        for e, row in enumerate(results[0][1].history)
    ]
    blocks.append(
        Block(dataset, "epoch", columns, rows, tuple(d for _ in results for _, _, d in measures), "per epoch")
    )
    return blocks


def _schedules():
    runs = tuple(
        _run(
            "cifar10",
            schedule,
            method="pgd-at",
            labels="hard",
            schedule=schedule,
            hessian_probes=SCHEDULE_HESSIAN_PROBES,
        )
        for schedule in ("piecewise", "cosine")
    )
    return Table(
        "Fig. B.7: vanilla PGD-AT under the piecewise and the cosine learning-rate schedule",
        runs,
        (),
        (),
        _schedule_blocks,
        panels=SCHEDULE_PANELS,
        notes=(
            "Fig. B.7 is a figure: the paper prints no numbers for it (every cell's paper side is –). "
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
            f"metrics.jsonl as hessian_trace_sem).",
        ),
    )


class Spread(NamedTuple):
    """One measure of a row's runs over their seeds."""

    mean: float
    sd: float  # the sample standard deviation (n - 1)
    values: tuple  # per seed, in seed order


def _spread(values) -> Spread:
    return Spread(statistics.fmean(values), statistics.stdev(values), tuple(values))


OVERFITTING_SEEDS = (0, 1, 2)
OVERFITTING_NOISE = (0.0, 0.4)


def _test_pgd_best(history) -> float:
    return max(row["test_pgd_acc"] for row in history)


# (column, measure of one run's per-epoch history, whether it needs label noise)
OVERFITTING_MEASURES = (
    ("PGD best", _test_pgd_best, False),
    ("PGD final", lambda h: h[-1]["test_pgd_acc"], False),
    ("best - final", lambda h: _test_pgd_best(h) - h[-1]["test_pgd_acc"], False),
    ("memorised (final epoch)", lambda h: h[-1]["train_adv_memorized_corrupted"], True),
)


def _overfitting_blocks(results):
    """One row per (label strategy, noise rate): each measure as mean ± sd over the seeds; – where it needs noise."""
    runs_of = {}
    for run, m in results:
        runs_of.setdefault((run.row, run.noise), []).append(m.history)
    rows = [
        (
            f"{row}, {noise:.0%} noise",
            [
                (_spread([measure(h) for h in histories]) if noise or not noisy else None, None)
                for _, measure, noisy in OVERFITTING_MEASURES
            ],
        )
        for (row, noise), histories in runs_of.items()
    ]
    return [Block(results[0][0].dataset, "labels, noise", [name for name, _, _ in OVERFITTING_MEASURES], rows)]


def _overfitting(sglr="both"):
    rows = [("PGD-AT", dict(labels="hard"))] + [(f"PGD-AT+SGLR ({v})", PRESETS[v]) for v in SGLR_CHOICES[sglr]]
    runs = tuple(
        _run("cifar10", row, f"{noise:.0%} noise, seed {seed}", noise=noise, method="pgd-at", seed=seed, **settings)
        for row, settings in rows
        for noise in OVERFITTING_NOISE
        for seed in OVERFITTING_SEEDS
    )
    return Table(
        "Robust overfitting and label memorisation: PGD-AT vs PGD-AT+SGLR over seeds (the CPU stand-in's study)",
        runs,
        (),
        (),
        _overfitting_blocks,
        notes=(
            f"Seeds {', '.join(map(str, OVERFITTING_SEEDS))} per row (initialisation, batch order, attacks; the noisy "
            f"labels are the same for every seed). PGD best / final: the per-epoch test PGD accuracy (its attack: "
            f"below), at its highest epoch and at the last; best - final is taken per seed, then averaged. The "
            f"best of many noisy epochs is biased upwards: with no overfitting at all the gap is above 0.",
            "memorised: the share of the corrupted training samples whose training adversarial example the model "
            "predicts as the corrupted label, in the last epoch (Dong et al.'s measure, the paper's Fig. 4).",
            "The paper reports no such table; its CIFAR-10 counterparts are Table 2 (best / final) and Fig. 4.",
            *_sglr_note(sglr, printed=False),
        ),
        legend="Each cell: mean ± sample standard deviation over the seeds; – where the measure needs label noise.",
    )


TABLES = {
    "table2": _table2,
    "table3": _table3,
    "table4": _table4,
    "noise": _noise,
    "calibration": _calibration,
    "transfer": _transfer,
    "wrn": _wrn,
    "schedules": _schedules,
    "overfitting": _overfitting,
}
