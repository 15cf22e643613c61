"""`fastsglr reproduce TABLE`: one of the paper's tables as a grid of training runs, evaluated and rendered in
markdown with the paper's number beside each measured one.

Tables: ``table2`` (PGD-AT with hard labels, LS, TE and SGLR), ``table3`` (PGD-AT and TRADES with and without SGLR,
CIFAR-10 and CIFAR-100), ``table4`` (SGLR's r x T ablation), ``noise`` (Table B.2: hard, LS and SGLR labels under
0-80% symmetric label noise), ``calibration`` (Table B.1: ECE on PGD-10 and Square examples, best and final) and
``transfer`` (Table B.3: PGD-AT and PGD-AT+SGLR targets under black-box PGD-10 and CW-inf examples crafted on
ResNet-34 and ResNet-50 sources trained with PGD-AT), ``wrn`` (Table B.4: PGD-AT and PGD-AT+SGLR on WRN-34-10) and
``schedules`` (Fig. B.7: vanilla PGD-AT under the piecewise and the cosine learning-rate schedule, per epoch: test
PGD accuracy, gradient norm and the Hessian trace of the training loss) and ``overfitting`` (no table of the paper's:
robust overfitting and label memorisation, PGD-AT vs PGD-AT+SGLR over three seeds, clean and under 40% symmetric
noise; the study of the CPU stand-in). A table's source runs are trained like its other runs but fill no cell.

Data: ``data`` holds one directory per data set. Each of the table's data sets uses the directory of that data set;
a directory of a data set the paper does not use (digits, synthetic) stands in for every one that has none, so one
digits directory gives a quick look at any table. 8x8 stand-ins (digits, 8x8 synthetic data) train with the
``standin`` preset (the ``convmlp`` network, eps 4/255, no augmentation, 100 epochs: the CPU-scale setting in which
PGD-AT robustly overfits and memorises noisy labels, docs/reproduce.md), the others with the paper's settings and
network: ResNet-18 fed raw [0, 1] inputs, as the authors' scripts train it
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

import dataclasses
import json
import os
import shutil

from ..config import Config, validate
from ..errors import UsageError
from ..files import atomic_file, check_output_dir, write_json
from ..report import plot_curves, plot_noise_memorization
from ..robustness import STANDARD, resolve_device
from ..trainer import read_history
from . import local, slurm
from .data import _data_for, _with_noise
from .grid import _base_config, _evaluate, _network, _run_config, check_same_run
from .jobs import done, plan
from .render import _block_heading, _notes, render
from .tables import SGLR_TABLES, TABLES, Measured, Spread, label

LAUNCHERS = ("local", "slurm")


def _figures(name, results, out, wrong_rates, panels) -> list:
    """The learning and gradient-norm curves of the table's runs on one page (each run once), and Fig. 4 for noise."""
    histories, seen = {}, set()
    for run, m in results:
        if m.run_dir not in seen:
            seen.add(m.run_dir)
            histories[label(run)] = m.history
    paths = [os.path.join(out, f"{name}_curves.png")]
    plot_curves(histories, paths[0], panels)
    if name == "noise":
        paths.append(os.path.join(out, "noise_fig4.png"))
        plot_noise_memorization(results, paths[1], wrong_rates)
    return paths


def _tensorboard_rows(out, table, labelled):
    """``OUT/tensorboard/<table>/<row>``: a link to each row's run directory, so that TensorBoard, which names a run
    by its folder, shows the table's runs by row (the run directories are named by their settings, shared between
    tables); a run that fills several rows appears once per row."""
    rows = os.path.join(out, "tensorboard", table)
    shutil.rmtree(rows, ignore_errors=True)  # the links only: rmtree does not follow them
    os.makedirs(rows)
    for name, run_dir in labelled:
        link = os.path.join(rows, name.replace(os.sep, "-"))
        if not os.path.lexists(link):
            os.symlink(os.path.relpath(run_dir, rows), link)


def _check_launch(launcher, jobs, runs_per_gpu, slurm_options, wait):
    """Flags that belong to another launcher, refused before any work."""
    if launcher == "slurm":
        if runs_per_gpu is not None:
            raise UsageError(
                "--runs-per-gpu packs runs on this machine's GPUs; a SLURM task gets --slurm-gpus-per-run: drop it"
            )
        return
    if wait:
        raise UsageError("--wait waits for SLURM jobs: add --launcher slurm, or drop --wait")
    if slurm_options is not None:
        raise UsageError("the --slurm-* flags apply to --launcher slurm: add it, or drop them")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs} is out of range: it must be at least 1")
    if runs_per_gpu is not None and runs_per_gpu < 1:
        raise UsageError(f"--runs-per-gpu {runs_per_gpu} is out of range: it must be at least 1")


def reproduce(
    table,
    data,
    out,
    *,
    epochs=None,
    eval_subset=None,
    root=None,
    settings=STANDARD,
    checks=True,
    device=None,
    engine=None,
    precision=None,
    model=None,
    sglr=None,
    jobs=None,
    runs_per_gpu=None,
    launcher=None,
    slurm_options=None,
    wait=False,
    command=None,
    log=print,
) -> dict | None:
    """Train (or resume) the table's runs in ``out``, evaluate them, write ``<table>.md``, ``<table>.json`` and
    the figures; returns the JSON content with the markdown under "markdown". ``engine`` and ``precision`` None:
    the config's defaults for the device; ``model`` None: ResNet-18 or the table's own network (the standin
    preset's network on an 8x8 stand-in); ``sglr`` None: both variants (table2, table3, wrn and overfitting).

    ``launcher`` None or "local": the runs train on this machine, ``jobs`` (default 1) at once: with one, every run
    trains in this one process (with the fast engine the runs' numbers reach the compiled iteration as device
    tensors, so only a new structure, a method or a label strategy, compiles); with more, each in a process of its
    own pinned to one device (``local.py``), ``runs_per_gpu`` per GPU. "slurm": the runs are submitted as SLURM
    job arrays (``slurm.py``; ``slurm_options``, ``jobs``: at most that many at once); without ``wait`` returns
    None once submitted. A run that fails does not stop the others: TrainingError at the end names it.
    ``command``: the command as typed, which an interrupted grid names to continue."""
    if table not in TABLES:
        raise UsageError(f"unknown table '{table}': choose one of {', '.join(TABLES)}")
    if sglr is not None and table not in SGLR_TABLES:
        raise UsageError(
            f"--sglr applies to {', '.join(SGLR_TABLES[:-1])} and {SGLR_TABLES[-1]} only ({table} has "
            f"no SGLR variants): drop --sglr"
        )
    for flag, value in (("epochs", epochs), ("eval-subset", eval_subset)):
        if value is not None and value < 1:
            raise UsageError(f"--{flag} {value} is out of range: it must be at least 1")
    _check_launch(launcher, jobs, runs_per_gpu, slurm_options, wait)
    out = os.path.abspath(out)  # the jobs' run directories, wherever a job runs (a SLURM task, a worker)
    spec = TABLES[table](sglr or "both") if table in SGLR_TABLES else TABLES[table]()
    if launcher == "slurm":  # the runs train on the cluster's nodes, not on this machine's device
        slurm_options = slurm_options or slurm.SlurmOptions()
        device = slurm.device(device, slurm_options)
    else:
        device = resolve_device(device).type
        devices, threads = local.slots(jobs or 1, device, runs_per_gpu)
    infos = _data_for(spec.sources + spec.runs, data)
    base_cfgs = {
        ds: validate(
            _base_config(
                info,
                epochs=epochs,
                eval_subset=eval_subset,
                device=device,
                engine=engine,
                precision=precision,
                model=model,
            )
        )
        for ds, info in infos.items()
    }  # validated before anything is written: a bad --model stops here
    check_output_dir(out, "tables")
    wrong_rates = {}
    run_dirs = {}  # row -> its run directory, for the KD runs that name it as a teacher (sources come first)
    entries = []  # (Config, row label, the run directories it needs, its transfer source, whether it is evaluated)

    def configured(run, evaluated) -> Config:
        info = _with_noise(infos[run.dataset], run.noise, out, root, log)
        if run.noise:
            wrong_rates[run.noise] = info.noise["realised_rate"]
        teachers = {key: run_dirs[row] for key, row in run.teachers}
        cfg = _run_config(
            dataclasses.replace(base_cfgs[run.dataset], data=os.path.abspath(info.root)),
            info,
            run,
            out,
            _network(spec, infos[run.dataset], model),
            teachers,
        )
        check_same_run(cfg)  # a run of other settings in the way: refused before any run trains
        run_dirs[run.row] = os.path.abspath(cfg.out)
        source = sources[run.source] if run.source else None
        needs = [*teachers.values(), *([os.path.dirname(source)] if source else [])]
        entries.append((cfg, label(run), needs, source, evaluated))
        return cfg

    sources = {}
    sources.update((run.row, os.path.join(configured(run, False).out, "best.pt")) for run in spec.sources)
    run_cfgs = [configured(run, True) for run in spec.runs]
    grid = plan(entries, spec.attacks, spec.checkpoints, n=eval_subset, settings=settings, checks=checks)
    _tensorboard_rows(out, table, [(row, cfg.out) for cfg, row, *_ in entries])
    pending = [job for job in grid if not done(job)]
    for job in grid:
        if job not in pending:
            log(f"{job.title}: finished, skipped")
    if pending and launcher == "slurm":
        if not slurm.submit(
            pending, out=out, table=table, options=slurm_options, parallel=jobs, wait=wait, log=log, command=command
        ):
            return None
    elif pending:
        held = slurm.queued_on_slurm(out, pending) if launcher is None else []
        if held:
            (job, task), more = held[0], f" and {len(held) - 1} more run(s)" if len(held) > 1 else ""
            raise UsageError(
                f"{job.title}{more} went to SLURM (task {task}) and has not finished: wait for it with "
                f"--launcher slurm --wait (which submits again what failed), or add --launcher local to train "
                f"it on this machine"
            )
        local.run_here(pending, parallel=jobs or 1, devices=devices, threads=threads, log=log, command=command)

    results = []
    for run, cfg in zip(spec.runs, run_cfgs):
        source = sources[run.source] if run.source else None
        evals = {
            which: _evaluate(cfg, which, spec.attacks, eval_subset, settings, checks, log, source)
            for which in spec.checkpoints
        }
        with open(os.path.join(cfg.out, "config.json")) as f:
            trained_config = json.load(f)
        results.append((run, Measured(cfg.out, read_history(cfg.out), evals, trained_config)))

    blocks = spec.blocks(results)
    notes = _notes(
        spec,
        infos,
        base_cfgs,
        epochs=epochs,
        eval_subset=eval_subset,
        settings=settings,
        checks=checks,
        results=results,
        wrong_rates=wrong_rates,
        model=model,
    )
    markdown = render(spec.title, spec.legend, blocks, infos, notes)
    with atomic_file(os.path.join(out, f"{table}.md"), "w") as f:
        f.write(markdown)
    report = {
        "table": table,
        "title": spec.title,
        "notes": notes,
        "figures": _figures(table, results, out, wrong_rates, spec.panels),
        "blocks": [
            {
                "dataset": b.dataset,
                "heading": _block_heading(b, infos),
                "columns": b.columns,
                "rows": [
                    {
                        "label": label,
                        "measured": [m._asdict() if isinstance(m, Spread) else m for m, _ in cells],
                        "paper": [p for _, p in cells],
                    }
                    for label, cells in b.rows
                ],
            }
            for b in blocks
        ],
        "runs": [
            {
                "dataset": run.dataset,
                "row": run.row,
                "column": run.column,
                "noise": run.noise,
                "run_dir": m.run_dir,
                "engine": m.config.get("engine"),
                "precision": m.config.get("precision"),
                **({"source": sources[run.source]} if run.source else {}),
            }
            for run, m in results
        ],
        "sources": sources,
    }
    write_json(os.path.join(out, f"{table}.json"), report)
    log("\n" + markdown)
    log(f"wrote {os.path.join(out, table + '.md')} and {', '.join(report['figures'])}")
    return {**report, "markdown": markdown}
