"""A table's markdown page: the blocks of measured / paper cells, and the notes saying how it was measured."""

import dataclasses

from ..config import n_epochs
from ..robustness import STANDARD, sgls_pgd
from .grid import _network
from .tables import PAPER_DATASETS, PAPER_EPOCHS, PAPER_NETWORK, Block, Spread, Table


def _cell(measured, printed, digits) -> str:
    if measured is None:
        return "–"
    if isinstance(measured, Spread):
        return f"{measured.mean:.{digits}f} ± {measured.sd:.{digits}f}"
    if printed is None:
        return f"{measured:.{digits}f} / –"
    return f"{measured:.{digits}f} / {printed:.{digits}f} ({measured - printed:+.{digits}f})"


def _heading(dataset, info) -> str:
    name = PAPER_DATASETS[dataset]
    return name if info.dataset == dataset else f"{name} (measured on {info.dataset})"


def _block_heading(block: Block, infos) -> str:
    heading = _heading(block.dataset, infos[block.dataset])
    return f"{heading}: {block.caption}" if block.caption else heading


def render(title, legend, blocks, infos, notes) -> str:
    """The markdown page: one table per block, then the notes."""
    lines = [f"# {title}", "", legend, ""]
    for b in blocks:
        digits = b.digits if isinstance(b.digits, tuple) else (b.digits,) * len(b.columns)
        lines += [
            f"## {_block_heading(b, infos)}",
            "",
            f"| {b.corner} | " + " | ".join(b.columns) + " |",
            "|---" * (len(b.columns) + 1) + "|",
        ]
        lines += [
            f"| {label} | " + " | ".join(_cell(m, p, d) for (m, p), d in zip(cells, digits)) + " |"
            for label, cells in b.rows
        ]
        lines.append("")
    lines += ["Notes:", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def _evaluator_notes(table: Table, base_cfgs) -> list:
    """Which PGD-20s the table's numbers are, and which per-epoch PGD picked best.pt."""
    notes = []
    for eps in dict.fromkeys(cfg.eps for cfg in base_cfgs.values()):
        radius, step = sgls_pgd(eps)
        if "pgd20" in table.attacks:
            notes.append(
                f"PGD-20 at eps {eps * 255:.4g}/255: 20 steps of eps/4 ({eps * 255 / 4:.4g}/255) from a "
                f"uniform random start (this project's standard). PGD-20 (SGLS): the authors' final "
                f"evaluator (pgd_attack.py: eps 0.031, step 0.003 at eps 8/255, random start), here eps "
                f"{radius:.4g}, step {step:.4g}. The paper does not say which PGD-20 it printed: both "
                f"stand beside its number."
            )
    shown = ", ".join(dict.fromkeys(f"PGD-{cfg.eval_steps} (steps of eps/4)" for cfg in base_cfgs.values()))
    if "best" in table.checkpoints:
        notes.append(
            f"best: the checkpoint of the epoch with the highest per-epoch test {shown} accuracy; diff = best - final."
        )
    elif not table.checkpoints:
        notes.append(f"The per-epoch test accuracy is under {shown}, from a uniform random start.")
    return notes


def _network_note(dataset, info, cfg, table: Table) -> str:
    """``cfg``: the base config with the table's network in it, as the runs train it."""
    inputs = "raw [0, 1] inputs" if cfg.input_norm == "none" else "inputs normalised by the data's mean / std"
    if info.dataset != dataset:
        augment = "no augmentation" if cfg.augment == "none" else "random flips and crops"
        return (
            f"{info.dataset} ({info.image_size}x{info.image_size}) stands in for {PAPER_DATASETS[dataset]}: model "
            f"{cfg.model} on {inputs}, eps {cfg.eps * 255:.4g}/255, {augment}, {n_epochs(cfg.epochs)} (the paper: "
            f"{table.network_name}, 8/255, random crops and flips, {PAPER_EPOCHS} epochs)."
        )
    expected = {**PAPER_NETWORK, **dict(table.network)}
    if (cfg.model, cfg.input_norm) != (expected["model"], expected["input_norm"]):
        return (
            f"{PAPER_DATASETS[dataset]}: model {cfg.model} on {inputs} (the paper: {table.network_name} on raw inputs)."
        )
    trained_as = "" if table.network else " as the authors' scripts train it (ARCH=resnet18)"
    return f"{PAPER_DATASETS[dataset]}: model {cfg.model} on {inputs}, the paper's {table.network_name}{trained_as}."


def _trained_with(results) -> str:
    """The engines and precisions the table's runs were trained with, from their config.json."""
    used = dict.fromkeys(
        f"{m.config.get('engine', '?')} engine, {m.config.get('precision', '?')} on {m.config.get('device', '?')}"
        for _, m in results
    )
    return "Trained with: " + "; ".join(used) + (" (every run)." if len(used) == 1 else " (differs between runs).")


def _notes(
    table: Table, infos, base_cfgs, *, epochs, eval_subset, settings, checks, results, wrong_rates, model
) -> list:
    """What sets this reproduction apart from the paper's, said plainly next to the numbers."""
    notes = list(table.notes)
    notes += [
        _network_note(dataset, info, dataclasses.replace(base_cfgs[dataset], **_network(table, info, model)), table)
        for dataset, info in infos.items()
    ]
    if wrong_rates:
        notes.append(
            "Realised wrong-label rates: "
            + ", ".join(f"eta {rate:.0%}: {wrong:.1%}" for rate, wrong in sorted(wrong_rates.items()))
            + "."
        )
    if epochs:
        plural = "s" if epochs != 1 else ""
        notes.append(f"Quick look: {epochs} training epoch{plural} per run (the paper: {PAPER_EPOCHS}).")
    if eval_subset and table.checkpoints:
        notes.append(
            f"Quick look: each checkpoint is evaluated on the first {eval_subset} test images, and best.pt "
            f"is chosen on a seeded subset of {eval_subset} (the paper: the whole test set)."
        )
    elif eval_subset:
        notes.append(
            f"Quick look: the per-epoch test accuracy is measured on a seeded subset of {eval_subset} test "
            f"images (the paper: the whole test set)."
        )
    weaker = [
        f"{k} {v} (standard {getattr(STANDARD, k)})"
        for k, v in dataclasses.asdict(settings).items()
        if v != getattr(STANDARD, k)
    ]
    if weaker:
        notes.append("Attack settings differ from the standard ones: " + ", ".join(weaker) + ".")
    notes += _evaluator_notes(table, base_cfgs)
    notes.append(_trained_with(results))
    if not checks:
        notes.append("Gradient-masking sanity checks were skipped.")
    notes += [
        f"Sanity check failed (possible gradient masking), {run.dataset} {run.row} {run.column} {which}: "
        f"{check['message']}"
        for run, m in results
        for which, report in m.evals.items()
        for check in report["checks"]
        if not check["passed"]
    ]
    return notes
