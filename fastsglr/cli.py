"""The command line: `fastsglr prepare | train | eval | reproduce | bench`.

`train`'s flags are generated from ``Config``'s fields (``config.option``: parser, choices, help), and the flags of
eval and reproduce that are Config options reuse those definitions; the rest map onto the keyword arguments of
``robustness.run_eval`` (eval) and ``reproduce.reproduce`` (reproduce). Nothing else lives here."""

import argparse
import dataclasses
import os
import shlex
import signal
import sys

from . import config as C
from .errors import Interrupted, TrainingError, UsageError


def _add_prepare(sub):
    from .data.noise import NOISE_TYPES
    from .data.sources import DATASETS

    p = sub.add_parser(
        "prepare",
        help="write a data directory (train.npz, test.npz, meta.json; betons with FFCV)",
        description="Read a raw data set, optionally corrupt its training labels, and write its arrays "
        "(and FFCV files where FFCV is installed).",
    )
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", help="where the raw files are (CIFAR: the python-pickle release or its .tar.gz)")
    p.add_argument("--out", required=True, help="the data directory to write")
    p.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        metavar="RATE",
        help="fraction of training labels to corrupt, in [0, 1)",
    )
    p.add_argument(
        "--noise-type",
        default="symmetric",
        choices=NOISE_TYPES,
        help="symmetric: resample a RATE share of labels over all classes (the paper's); symmetric-flip: "
        "move exactly that share to another class; asymmetric: CIFAR class flips",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the label noise and of synthetic data")
    p.add_argument("--synthetic-train", type=int, default=50_000, metavar="N", help="synthetic: training images")
    p.add_argument("--synthetic-test", type=int, default=10_000, metavar="N", help="synthetic: test images")
    p.add_argument(
        "--synthetic-size",
        type=int,
        default=32,
        metavar="SIDE",
        help="synthetic: image side, 32 (CIFAR's), 16 or 8 (block means of the 32 x 32 images)",
    )
    p.set_defaults(run=_run_prepare)


def _run_prepare(args):
    from .data.prepare import prepare

    C.check_range("label_noise", args.label_noise, 0, 1, hi_open=True)
    C.check_range("seed", args.seed, 0, C.SEED_MAX)
    C.check_range("synthetic_train", args.synthetic_train, 1, 10**8)
    C.check_range("synthetic_test", args.synthetic_test, 1, 10**8)
    meta = prepare(
        args.dataset,
        args.out,
        root=args.root,
        label_noise=args.label_noise,
        noise_type=args.noise_type,
        seed=args.seed,
        synthetic_train=args.synthetic_train,
        synthetic_test=args.synthetic_test,
        synthetic_size=args.synthetic_size,
    )
    print(
        f"wrote {args.out}: {meta['counts']['train']} train / {meta['counts']['test']} test images, "
        f"{meta['num_classes']} classes, {meta['noise']['realised_rate']:.1%} of training labels wrong"
    )
    return 0


def _flag(name) -> str:
    return f"--{name.replace('_', '-')}"


def _shown(value, parse=None) -> str:
    """A value as one would type it: eps 8/255 rather than 0.0313725, milestones 0.5,0.75."""
    if isinstance(value, tuple):
        return ",".join(_shown(v, parse) for v in value)
    if parse in (C.parse_fraction, C.parse_fractions) and value and abs(value * 255 - round(value * 255)) < 1e-9:
        return f"{round(value * 255)}/255"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _add_option(parser, name, default=None, check_choices=False, help=None):
    """The flag of Config field ``name``, with the field's parser, choices and help. ``default`` says in words what
    an omitted flag means where that is not the field's default (eval: the checkpoint's); ``check_choices`` lets
    argparse refuse other values (`train` leaves that to ``config.validate``, which also checks presets and resumed
    runs); ``help`` replaces the field's where the sub-command gives the option another scope."""
    f = C.OPTIONS[name]
    meta, parse = f.metadata, f.metadata["parse"] or f.type
    text = help or meta["help"]
    if meta["choices"]:
        text += f"; one of: {', '.join(meta['choices'])}"
    if default is None and (meta["omitted"] or not (f.default == "" or f.default is False)):
        default = meta["omitted"] or _shown(f.default, parse)
    if default is not None:
        text += f" (default: {default})"
    text = text.replace("%", "%%")  # argparse formats help with %
    if parse is bool:
        return parser.add_argument(_flag(name), action="store_true", help=text)
    return parser.add_argument(
        _flag(name),
        type=parse,
        metavar=name.upper(),
        help=text,
        **({"choices": meta["choices"]} if check_choices else {}),
    )


def _presets_epilog() -> str:
    lines = ["presets (each overrides the defaults above; flags override a preset):"]
    for preset, overrides in C.PRESETS.items():
        shown = (f"{_flag(k)} {_shown(v, C.OPTIONS[k].metadata['parse'])}" for k, v in overrides.items())
        lines.append(f"  {preset}: {' '.join(shown)}")
    return "\n".join(lines)


def _add_train(sub):
    # argparse's defaults are SUPPRESSed: only the flags a user typed override the preset and Config's defaults.
    p = sub.add_parser(
        "train",
        help="adversarial training (PGD-AT / TRADES with hard, LS, TE or SGLR labels)",
        description="Train a robust classifier. Defaults are the paper's settings; a --preset "
        "overrides them and explicit flags override the preset.",
        epilog=_presets_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--preset", help=f"named settings, listed below: {', '.join(C.PRESETS)}")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    for name in C.OPTIONS:
        _add_option(p, name)
    p.set_defaults(run=_run_train)


PATH_OPTIONS = ("data", "kd_teacher_adv", "kd_teacher_std")  # stored absolute in a run's config


def config_from_args(args) -> C.Config:
    """Config defaults <- preset <- explicit flags, then validation."""
    import torch

    cfg = C.Config(device="cuda" if torch.cuda.is_available() else "cpu")
    if getattr(args, "preset", None):
        cfg = C.apply_preset(cfg, args.preset)
    explicit = {name: getattr(args, name) for name in C.OPTIONS if hasattr(args, name)}
    cfg = dataclasses.replace(cfg, **explicit)
    if not cfg.data:
        raise UsageError("--data is required: pass a directory written by `fastsglr prepare`")
    if not cfg.out:
        raise UsageError("--out is required: name a directory for the run's checkpoints and metrics")
    # Absolute, so that the run resumes (and its checkpoints evaluate) from any working directory.
    paths = {name: os.path.abspath(getattr(cfg, name)) for name in PATH_OPTIONS if getattr(cfg, name)}
    return C.validate(dataclasses.replace(cfg, **paths))


def _same_setting(field, given, saved) -> bool:
    """Paths name the same folder however they are written (relative, absolute, with a trailing slash)."""
    if field in ("out", *PATH_OPTIONS):
        return os.path.realpath(given) == os.path.realpath(saved)
    return given == saved


def _run_train(args):
    from .trainer import train

    if getattr(args, "resume", None):
        from .checkpoint import resume_config

        # The run directory may have moved since it was written: it is wherever --resume points now.
        cfg = dataclasses.replace(resume_config(args.resume), out=args.resume)
        if hasattr(args, "loader"):  # both loaders yield the same batches: the run goes on identically
            cfg = dataclasses.replace(cfg, loader=args.loader)
        cfg = C.validate(cfg)  # a hand-edited file too
        for name in C.OPTIONS:
            if hasattr(args, name) and not _same_setting(name, getattr(args, name), getattr(cfg, name)):
                raise UsageError(
                    f"{_flag(name)} {getattr(args, name)} conflicts with the run being resumed "
                    f"({getattr(cfg, name)}): drop the flag, or start a new run with --out"
                )
    else:
        cfg = config_from_args(args)
    train(cfg, resume=bool(getattr(args, "resume", None)), overwrite=getattr(args, "overwrite", False))
    return 0


def _add_eval(sub):
    p = sub.add_parser(
        "eval",
        help="robustness of a checkpoint or a run directory (clean, PGD-20, CW, AutoAttack, "
        "Square, transfer), with gradient-masking checks",
        description="Attack a checkpoint, or a run directory's best.pt and final.pt (then a best / "
        "final / diff table), and write a JSON report. eps and the data default to the "
        "checkpoint's training settings; AutoAttack uses the original's standard settings.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file, or a run directory (best.pt and final.pt)")
    p.add_argument("--data", help="a data directory (default: the checkpoint's training data)")
    p.add_argument(
        "--attacks",
        default="clean,pgd20,pgd20-sgls,cw,autoattack",
        help="comma-separated: clean, pgdK (e.g. pgd20: K steps of eps/4), pgd20-sgls (the authors' "
        "evaluator: eps 0.031, step 0.003 at eps 8/255), cw, autoattack, square, transfer "
        "(PGD-20 on --source), transfer-pgdK, transfer-cw (default: %(default)s)",
    )
    p.add_argument("--n", type=int, metavar="N", help="evaluate the first N test images (default: all)")
    _add_option(p, "eps", default="the checkpoint's")
    p.add_argument(
        "--source", metavar="CHECKPOINT", help="transfer: the checkpoint the adversarial examples are crafted on"
    )
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking sanity checks")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default: 0)")
    p.add_argument("--batch-size", type=int, default=256, help="images per attacked batch (default: 256)")
    _add_option(p, "device", check_choices=True)
    p.add_argument("--out", required=True, metavar="REPORT.json", help="where the JSON report goes")
    p.set_defaults(run=_run_eval)


def _run_eval(args):
    from .robustness import run_eval

    run_eval(
        args.checkpoint,
        out=args.out,
        data=args.data,
        attacks=args.attacks,
        n=args.n,
        eps=args.eps,
        source=args.source,
        checks=not args.no_checks,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
    )
    return 0


def _add_reproduce(sub):
    p = sub.add_parser(
        "reproduce",
        help="one of the paper's tables as a grid of runs, beside the paper's numbers",
        description="Train (or resume) the runs of one of the paper's tables in --out, evaluate them "
        "and render the table in markdown with the paper's number beside each measured "
        "one, plus the runs' curves. Running it again resumes where it stopped.",
    )
    p.add_argument(
        "table",
        help="table2 | table3 | table4 | noise (Table B.2) | calibration (Table B.1) | "
        "transfer (Table B.3) | wrn (Table B.4) | schedules (Fig. B.7)",
    )
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="DATA_DIR",
        help="a data directory, once per data set the table needs (table3: CIFAR-10 and CIFAR-100); "
        "a digits or synthetic directory stands in for every data set not given",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where the runs, the table and the figures go")
    _add_option(
        p, "epochs", default="the table's", help="train each run this many epochs: a quick look, which the table says"
    )
    _add_option(p, "eval_subset", default="all", help="evaluate on N test images: a quick look, which the table says")
    p.add_argument("--root", help="noise on CIFAR: the folder with the raw CIFAR files, to write the noisy copies")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking sanity checks")
    _add_option(p, "device", check_choices=True)
    _add_option(p, "engine", check_choices=True)
    _add_option(
        p,
        "model",
        default="resnet18 on raw inputs, the paper's, or the table's own (wrn: wrn34_10); on "
        "an 8x8 stand-in (digits, --synthetic-size 8) the standin preset's convmlp",
    )
    p.add_argument(
        "--sglr",
        choices=("paper", "sgls-code", "both"),
        help="table2 / table3 / wrn / overfitting: the SGLR rows' variant, the paper's formula (r 0.2, T 1.5) or "
        "the authors' released code (r 1, T 1, warm-up); default: both",
    )
    _add_option(p, "precision", check_choices=True)
    _add_grid_flags(p)
    p.set_defaults(run=_run_reproduce)


def _parse_minutes(text) -> int:
    """--slurm-time: minutes (90), H:MM:SS (1:30:00) or D-HH:MM:SS, as sbatch --time takes them."""
    try:
        days, _, clock = text.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        if len(parts) > 3 or any(p < 0 for p in parts) or (days and len(parts) != 3):
            raise ValueError
        h, m, s = [0] * (3 - len(parts)) + parts if len(parts) > 1 else (0, parts[0], 0)
        minutes = int(days or 0) * 1440 + h * 60 + m + (s > 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a time: write minutes (90) or H:MM:SS (1:30:00)") from None
    if minutes < 1:
        raise argparse.ArgumentTypeError(f"--slurm-time {text} is out of range: give a run at least a minute")
    return minutes


def _parse_sbatch_arg(text) -> tuple:
    """--slurm-arg KEY=VALUE: any sbatch option, e.g. cpus-per-task=8, qos=high, constraint=h100."""
    key, eq, value = text.partition("=")
    if not (eq and key.strip()):
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE: write an sbatch option as cpus-per-task=8")
    return key.strip().removeprefix("--"), value


def _add_grid_flags(p):
    """Where and how many of the grid's runs train at once (docs/reproduce.md, "Several GPUs, SLURM and
    TensorBoard"). Nothing of fastsglr.reproduce is imported here: it needs matplotlib, which a bare GPU box that
    only trains lacks."""
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="train N runs at once, each in a process of its own pinned to one device (CUDA: one GPU each, round "
        "robin over the visible GPUs; CPU: the cores divided among them); with --launcher slurm, at most N tasks "
        "at once (default: 1 here, one after another in this process; SLURM: no limit)",
    )
    p.add_argument("--runs-per-gpu", type=int, metavar="K", help="--jobs on CUDA: K runs share one GPU (default: 1)")
    p.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        help="local: train on this machine; slurm: submit the runs not finished as SLURM job arrays through "
        "submitit, OUT on the cluster's shared filesystem (default: local, refused for runs a SLURM submission "
        "from OUT holds)",
    )
    p.add_argument("--wait", action="store_true", help="--launcher slurm: wait for the runs, then render the table")
    p.add_argument("--slurm-partition", metavar="NAME", help="sbatch --partition")
    p.add_argument(
        "--slurm-time",
        type=_parse_minutes,
        metavar="TIME",
        help="sbatch --time of each run: minutes or H:MM:SS (default: 24:00:00)",
    )
    p.add_argument(
        "--slurm-gpus-per-run", type=int, metavar="G", help="sbatch --gpus-per-node; 0: CPU runs (default: 1)"
    )
    p.add_argument("--slurm-account", metavar="NAME", help="sbatch --account")
    p.add_argument(
        "--slurm-arg",
        type=_parse_sbatch_arg,
        action="append",
        metavar="KEY=VALUE",
        help="any other sbatch option, repeatable: --slurm-arg cpus-per-task=8 --slurm-arg qos=high",
    )


def _slurm_options(args):
    """The --slurm-* flags given, or None when there are none."""
    from .reproduce.slurm import SlurmOptions

    given = {
        field: value
        for field, value in (
            ("partition", args.slurm_partition),
            ("time", args.slurm_time),
            ("gpus_per_run", args.slurm_gpus_per_run),
            ("account", args.slurm_account),
            ("extra", tuple(args.slurm_arg or ())),
        )
        if value or value == 0  # --slurm-gpus-per-run 0: a CPU cluster
    }
    if args.slurm_gpus_per_run is not None and args.slurm_gpus_per_run < 0:
        raise UsageError(f"--slurm-gpus-per-run {args.slurm_gpus_per_run} is out of range: 0 (a CPU run) or more")
    return SlurmOptions(**given) if given else None


def _run_reproduce(args):
    from .reproduce import reproduce

    reproduce(
        args.table,
        args.data,
        args.out,
        epochs=args.epochs,
        eval_subset=args.eval_subset,
        root=args.root,
        checks=not args.no_checks,
        device=args.device,
        engine=args.engine,
        precision=args.precision,
        model=args.model,
        sglr=args.sglr,
        jobs=args.jobs,
        runs_per_gpu=args.runs_per_gpu,
        launcher=args.launcher,
        slurm_options=_slurm_options(args),
        wait=args.wait,
        command=args.invocation,
    )
    return 0


def _add_bench(sub):
    # Every argument, --help included, is the benchmark's own (main() hands them over as ``args.rest``).
    p = sub.add_parser(
        "bench", add_help=False, help="epochs per hour: the fast engine's ablation ladder (bench/epochs_per_hour.py)"
    )
    p.set_defaults(run=_run_bench, takes_rest=True)


def _run_bench(args):
    import os
    import runpy

    # The benchmarks are scripts beside the package, not part of it (bench/gpu_suite.sh runs them without an
    # install): an editable install, which `make` sets up, finds them in the checkout.
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "epochs_per_hour.py")
    if not os.path.isfile(script):
        raise UsageError(
            "`fastsglr bench` runs bench/epochs_per_hour.py of a source checkout, which this install "
            "lacks: clone the repository and `pip install -e` it"
        )
    return runpy.run_path(script)["main"](args.rest, prog="fastsglr bench")


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (an unknown choice or flag, a missing argument) as one-line UsageErrors, like every
    other bad input, instead of its usage text followed by the error."""

    def error(self, message):
        raise UsageError(f"{message}: see `{self.prog} --help`")


def build_parser():
    parser = _Parser(prog="fastsglr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_reproduce(sub)
    _add_bench(sub)
    return parser


class _OutlivesItsReader:
    """stdout that survives its reader going away (``fastsglr train ... | head -2``): a run must not die of a
    BrokenPipeError in a progress line. From the first one on, the descriptor points at /dev/null, so later output
    (and the interpreter's last flush) is dropped quietly."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _after_stop(args) -> str:
    """What to do after a signal stopped a sub-command at once."""
    run = getattr(args, "resume", None) or getattr(args, "out", None)
    if getattr(args, "command", None) == "train" and run and os.path.isfile(os.path.join(run, "last.pt")):
        return f"last.pt holds the last finished epoch: fastsglr train --resume {run}"
    if getattr(args, "command", None) == "reproduce":
        return f"no file was left half-written: continue the grid with: {args.invocation}"
    return "no file was left half-written: run the command again"


def run_command(work, after_stop) -> int:
    """``work()`` as a fastsglr command, its exit code: outside a run's loop SIGINT / SIGTERM stop it at once
    (``after_stop()`` says what then), and a user's mistake, a run that cannot go on or an interrupted run is one
    line on stderr instead of a traceback."""
    from .stop import signals_to, stop_at_once

    try:
        with signals_to(stop_at_once):
            return work()
    except (UsageError, TrainingError) as exc:
        print(f"fastsglr: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:
        print(f"fastsglr: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # StoppedBySignal, or Python's own SIGINT before the handlers were set
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"fastsglr: stopped by {signal.Signals(signum).name}; {after_stop()}", file=sys.stderr)
        return 128 + signum


def main(argv=None) -> int:
    args = None

    def work():
        nonlocal args
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        args.rest = rest
        # The command as typed, for a message that says how to continue it.
        args.invocation = "fastsglr " + shlex.join(sys.argv[1:] if argv is None else argv)
        if args.rest and not getattr(args, "takes_rest", False):
            parser.error(f"unrecognized arguments: {' '.join(args.rest)}")
        return args.run(args)

    stdout, sys.stdout = sys.stdout, _OutlivesItsReader(sys.stdout)
    try:
        return run_command(work, lambda: _after_stop(args))
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    sys.exit(main())
