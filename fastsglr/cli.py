"""The command line: `fastsglr prepare | train | eval | reproduce | bench`.

Flags map onto ``Config`` (train) or onto the keyword arguments of ``robustness.run_eval`` (eval) and
``reproduce.reproduce`` (reproduce); nothing else lives here."""
import argparse
import dataclasses
import os
import signal
import sys
import threading

from . import config as C
from .errors import Interrupted, TrainingError, UsageError


def _add_prepare(sub):
    from .data.noise import NOISE_TYPES
    from .data.sources import DATASETS

    p = sub.add_parser("prepare", help="write a data directory (train.npz, test.npz, meta.json; betons with FFCV)",
                       description="Read a raw data set, optionally corrupt its training labels, and write its arrays "
                                   "(and FFCV files where FFCV is installed).")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", help="where the raw files are (CIFAR: the python-pickle release or its .tar.gz)")
    p.add_argument("--out", required=True, help="the data directory to write")
    p.add_argument("--label-noise", type=float, default=0.0, metavar="RATE",
                   help="fraction of training labels to corrupt, in [0, 1)")
    p.add_argument("--noise-type", default="symmetric", choices=NOISE_TYPES,
                   help="symmetric: resample a RATE share of labels over all classes (the paper's); symmetric-flip: "
                        "move exactly that share to another class; asymmetric: CIFAR class flips")
    p.add_argument("--seed", type=int, default=0, help="seed of the label noise and of synthetic data")
    p.add_argument("--synthetic-train", type=int, default=50_000, metavar="N", help="synthetic: training images")
    p.add_argument("--synthetic-test", type=int, default=10_000, metavar="N", help="synthetic: test images")
    p.set_defaults(run=_run_prepare)


def _run_prepare(args):
    from .data.prepare import prepare

    C.check_range("label_noise", args.label_noise, 0, 1, hi_open=True)
    C.check_range("seed", args.seed, 0, C.SEED_MAX)
    C.check_range("synthetic_train", args.synthetic_train, 1, 10**8)
    C.check_range("synthetic_test", args.synthetic_test, 1, 10**8)
    meta = prepare(args.dataset, args.out, root=args.root, label_noise=args.label_noise, noise_type=args.noise_type,
                   seed=args.seed, synthetic_train=args.synthetic_train, synthetic_test=args.synthetic_test)
    print(f"wrote {args.out}: {meta['counts']['train']} train / {meta['counts']['test']} test images, "
          f"{meta['num_classes']} classes, {meta['noise']['realised_rate']:.1%} of training labels wrong")
    return 0


# Flags of `train`: (flag, Config field, type, help). Defaults come from Config and the preset, so argparse's
# default is SUPPRESS: only flags the user typed override them.
_TRAIN_FLAGS = [
    ("--data", "data", str, "a data directory written by `fastsglr prepare`"),
    ("--model", "model", str, "preactresnet18 | resnet18 | resnet34 | resnet50 | wrn34_10 | wrn28_10 | smallcnn"),
    ("--input-norm", "input_norm", str, "data (normalise by the training images' mean/std inside the model) | "
                                        "none (raw [0, 1] inputs, as the authors' code)"),
    ("--method", "method", str, "pgd-at | trades"),
    ("--labels", "labels", str, "hard | ls | te | sglr"),
    ("--epochs", "epochs", int, "training epochs (paper: 200)"),
    ("--batch-size", "batch_size", int, "batch size (paper: 128)"),
    ("--lr", "lr", float, "initial learning rate (paper: 0.1)"),
    ("--schedule", "schedule", str, "piecewise (x0.1 at 50%% and 75%% of the epochs) | cosine"),
    ("--eps", "eps", C.parse_fraction, "l-inf radius, e.g. 8/255"),
    ("--step-size", "step_size", C.parse_fraction, "training attack step, e.g. 2/255"),
    ("--attack-steps", "attack_steps", int, "training attack steps (PGD-10: 10)"),
    ("--trades-beta", "trades_beta", float, "TRADES: weight of the KL term (6)"),
    ("--attack-bn-mode", "attack_bn_mode", str, "BN mode while crafting training attacks: eval | train"),
    ("--awp-gamma", "awp_gamma", float, "AWP: weight perturbation size relative to ||w|| (0: off; Wu et al.: 0.01 "
                                        "PGD-AT, 0.005 TRADES)"),
    ("--awp-warmup", "awp_warmup", int, "AWP: epochs without the perturbation first (0)"),
    ("--r", "r", float, "LS smoothing / SGLR weight of the refined label (0.2)"),
    ("--temperature", "temperature", float, "SGLR temperature T (paper 1.5)"),
    ("--ema-momentum", "ema_momentum", float, "SGLR alpha / TE momentum (0.9)"),
    ("--lam", "lam", float, "SGLR: weight of the clean prediction in the refined label (0.2)"),
    ("--ema-init", "ema_init", str, "SGLR table start: onehot | zeros"),
    ("--sglr-warmup", "sglr_warmup", int, "SGLR: hard-label epochs before refinement starts"),
    ("--te-weight", "te_weight", float, "TE: weight of the consistency term (a mean over batch x classes)"),
    ("--te-start", "te_start", float, "TE: fraction of the epochs before which the weight is 0, the table frozen"),
    ("--te-end", "te_end", float, "TE: fraction of the epochs where the weight's ramp-up ends"),
    ("--eval-every", "eval_every", int, "evaluate every K epochs and the last one (default 1: every epoch, which "
                                        "the paper's best checkpoint needs)"),
    ("--eval-subset", "eval_subset", int, "evaluate each epoch on a fixed seeded subset of N test images"),
    ("--eval-step-size", "eval_step_size", C.parse_fraction, "PGD-20 step (default eps/4)"),
    ("--hessian-probes", "hessian_probes", int, "per epoch, the Hessian trace of the adversarial training loss on a "
                                                "fixed batch by Hutchinson's estimator with this many probes (0: off)"),
    ("--loader", "loader", str, "ffcv (streams the betons) | device (whole data set held on the device); "
                                "default: ffcv where it can be imported, else device"),
    ("--device", "device", str, "cpu | cuda (default: cuda when available)"),
    ("--engine", "engine", str, "fast (compiled; CUDA: channels-last, CUDA graph) | reference (eager fp32); "
                                "default: fast on CUDA, reference on CPU"),
    ("--precision", "precision", str, "fast engine: fp32 | bf16 | fp16 (default: bf16 on CUDA, fp32 on CPU)"),
    ("--sync-bn", "sync_bn", bool, "torchrun: SyncBatchNorm over the global batch (CUDA only) instead of per-rank "
                                   "BatchNorm"),
    ("--seed", "seed", int, "seed of initialisation, attacks, order and augmentation"),
    ("--out", "out", str, "the run directory to write"),
]


def _add_train(sub):
    p = sub.add_parser("train", help="adversarial training (PGD-AT / TRADES with hard, LS, TE or SGLR labels)",
                       description="Train a robust classifier. Defaults are the paper's settings; a --preset "
                                   "overrides them and explicit flags override the preset.",
                       argument_default=argparse.SUPPRESS)
    p.add_argument("--preset", help=f"named settings: {', '.join(C.PRESETS)}")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    for flag, _, typ, text in _TRAIN_FLAGS:
        if typ is bool:
            p.add_argument(flag, action="store_true", help=text)
        else:
            p.add_argument(flag, type=typ, help=text)
    p.set_defaults(run=_run_train)


def config_from_args(args) -> C.Config:
    """Config defaults <- preset <- explicit flags, then validation."""
    import torch

    cfg = C.Config(device="cuda" if torch.cuda.is_available() else "cpu")
    if getattr(args, "preset", None):
        cfg = C.apply_preset(cfg, args.preset)
    explicit = {field: getattr(args, field) for _, field, _, _ in _TRAIN_FLAGS if hasattr(args, field)}
    cfg = dataclasses.replace(cfg, **explicit)
    if not cfg.data:
        raise UsageError("--data is required: pass a directory written by `fastsglr prepare`")
    if not cfg.out:
        raise UsageError("--out is required: name a directory for the run's checkpoints and metrics")
    # Absolute, so that the run resumes (and its checkpoints evaluate) from any working directory.
    return C.validate(dataclasses.replace(cfg, data=os.path.abspath(cfg.data)))


def _same_setting(field, given, saved) -> bool:
    """Paths name the same folder however they are written (relative, absolute, with a trailing slash)."""
    if field in ("data", "out"):
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
        for _, field, _, _ in _TRAIN_FLAGS:
            if hasattr(args, field) and not _same_setting(field, getattr(args, field), getattr(cfg, field)):
                raise UsageError(f"--{field.replace('_', '-')} {getattr(args, field)} conflicts with the run being "
                                 f"resumed ({getattr(cfg, field)}): drop the flag, or start a new run with --out")
    else:
        cfg = config_from_args(args)
    train(cfg, resume=bool(getattr(args, "resume", None)), overwrite=getattr(args, "overwrite", False))
    return 0


def _add_eval(sub):
    p = sub.add_parser("eval", help="robustness of a checkpoint or a run directory (clean, PGD-20, CW, AutoAttack, "
                                    "Square, transfer), with gradient-masking checks",
                       description="Attack a checkpoint, or a run directory's best.pt and final.pt (then a best / "
                                   "final / diff table), and write a JSON report. eps and the data default to the "
                                   "checkpoint's training settings; AutoAttack uses the original's standard settings.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file, or a run directory (best.pt and final.pt)")
    p.add_argument("--data", help="a data directory (default: the checkpoint's training data)")
    p.add_argument("--attacks", default="clean,pgd20,pgd20-sgls,cw,autoattack",
                   help="comma-separated: clean, pgdK (e.g. pgd20: K steps of eps/4), pgd20-sgls (the authors' "
                        "evaluator: eps 0.031, step 0.003 at eps 8/255), cw, autoattack, square, transfer "
                        "(PGD-20 on --source), transfer-pgdK, transfer-cw (default: %(default)s)")
    p.add_argument("--n", type=int, metavar="N", help="evaluate the first N test images (default: all)")
    p.add_argument("--eps", type=C.parse_fraction, help="l-inf radius, e.g. 8/255 (default: the checkpoint's)")
    p.add_argument("--source", metavar="CHECKPOINT", help="transfer: the checkpoint the adversarial examples are "
                                                           "crafted on")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking sanity checks")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default: 0)")
    p.add_argument("--batch-size", type=int, default=256, help="images per attacked batch (default: 256)")
    p.add_argument("--device", choices=C.DEVICES, help="default: cuda when available")
    p.add_argument("--out", required=True, metavar="REPORT.json", help="where the JSON report goes")
    p.set_defaults(run=_run_eval)


def _run_eval(args):
    from .robustness import run_eval

    run_eval(args.checkpoint, out=args.out, data=args.data, attacks=args.attacks, n=args.n, eps=args.eps,
             source=args.source, checks=not args.no_checks, seed=args.seed, batch_size=args.batch_size,
             device=args.device)
    return 0


def _add_reproduce(sub):
    p = sub.add_parser("reproduce", help="one of the paper's tables as a grid of runs, beside the paper's numbers",
                       description="Train (or resume) the runs of one of the paper's tables in --out, evaluate them "
                                   "and render the table in markdown with the paper's number beside each measured "
                                   "one, plus the runs' curves. Running it again resumes where it stopped.")
    p.add_argument("table", help="table2 | table3 | table4 | noise (Table B.2) | calibration (Table B.1) | "
                                 "transfer (Table B.3) | wrn (Table B.4) | schedules (Fig. B.7)")
    p.add_argument("--data", action="append", required=True, metavar="DATA_DIR",
                   help="a data directory, once per data set the table needs (table3: CIFAR-10 and CIFAR-100); "
                        "a digits or synthetic directory stands in for every data set not given")
    p.add_argument("--out", required=True, metavar="DIR", help="where the runs, the table and the figures go")
    p.add_argument("--epochs", type=int, help="train each run this many epochs: a quick look, which the table says")
    p.add_argument("--eval-subset", type=int, metavar="N",
                   help="evaluate on N test images: a quick look, which the table says")
    p.add_argument("--root", help="noise on CIFAR: the folder with the raw CIFAR files, to write the noisy copies")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking sanity checks")
    p.add_argument("--device", choices=C.DEVICES, help="default: cuda when available")
    p.add_argument("--engine", choices=C.ENGINES, help="training engine (default: fast on CUDA, reference on CPU)")
    p.add_argument("--model", help="the network of every run (default: resnet18 on raw inputs, the paper's, or "
                                   "the table's own (wrn: wrn34_10); on digits the demo preset's smallcnn)")
    p.add_argument("--sglr", choices=("paper", "sgls-code", "both"),
                   help="table2 / table3 / wrn: the SGLR rows' variant, the paper's formula (r 0.2, T 1.5) or the authors' "
                        "released code (r 1, T 1, warm-up); default: both")
    p.add_argument("--precision", choices=C.PRECISIONS, help="fast engine (default: bf16 on CUDA, fp32 on CPU)")
    p.set_defaults(run=_run_reproduce)


def _run_reproduce(args):
    from .reproduce import reproduce

    reproduce(args.table, args.data, args.out, epochs=args.epochs, eval_subset=args.eval_subset, root=args.root,
              checks=not args.no_checks, device=args.device, engine=args.engine, precision=args.precision,
              model=args.model, sglr=args.sglr)
    return 0


def _add_bench(sub):
    # Every argument, --help included, is the benchmark's own (main() hands them over as ``args.rest``).
    p = sub.add_parser("bench", add_help=False,
                       help="epochs per hour: the fast engine's ablation ladder (bench/epochs_per_hour.py)")
    p.set_defaults(run=_run_bench, takes_rest=True)


def _run_bench(args):
    import os
    import runpy

    # The benchmarks are scripts beside the package, not part of it (bench/gpu_suite.sh runs them without an
    # install): an editable install, which `make` sets up, finds them in the checkout.
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "epochs_per_hour.py")
    if not os.path.isfile(script):
        raise UsageError("`fastsglr bench` runs bench/epochs_per_hour.py of a source checkout, which this install "
                         "lacks: clone the repository and `pip install -e` it")
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
    return "no file was left half-written: run the command again"


def main(argv=None) -> int:
    from .stop import handle_signals, stop_at_once

    args = None
    stdout, sys.stdout = sys.stdout, _OutlivesItsReader(sys.stdout)
    in_main_thread = threading.current_thread() is threading.main_thread()  # Python delivers signals only there
    handlers = handle_signals(stop_at_once) if in_main_thread else {}
    try:
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        args.rest = rest
        if args.rest and not getattr(args, "takes_rest", False):
            parser.error(f"unrecognized arguments: {' '.join(args.rest)}")
        return args.run(args)
    except (UsageError, TrainingError) as exc:
        print(f"fastsglr: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:
        print(f"fastsglr: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # StoppedBySignal, or Python's own SIGINT before the handlers were set
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"fastsglr: stopped by {signal.Signals(signum).name}; {_after_stop(args)}", file=sys.stderr)
        return 128 + signum
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        sys.stdout = stdout


if __name__ == "__main__":
    sys.exit(main())
