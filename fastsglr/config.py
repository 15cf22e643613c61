"""One config object for a training run, with named presets and up-front validation.

Every option of a run lives here, with its help and choices (``option``); the CLI's `train` flags are generated
from these fields. A preset is a set of overrides on top of the defaults (which are the paper's settings), and
explicit flags override the preset.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields

from .errors import UsageError
from .models import MODEL_NAMES

METHODS = ("pgd-at", "trades", "standard")
LABEL_STRATEGIES = ("hard", "ls", "te", "sglr")
SCHEDULES = ("piecewise", "cosine")
BN_MODES = ("eval", "train")
EMA_INITS = ("onehot", "zeros")
ENGINES = ("reference", "fast")
PRECISIONS = ("fp32", "bf16", "fp16")
LOADERS = ("ffcv", "device")
INPUT_NORMS = ("data", "none")
AUGMENTATIONS = ("flip-crop", "none")
DEVICES = ("cpu", "cuda")
# Seeds reach torch, numpy and FFCV (which derive per-epoch seeds from them); 31 bits fit every one of them.
SEED_MAX = 2**31 - 1
MAX_STEPS = 10_000  # attack steps, training and evaluation alike: more is a typo, not a stronger attack


def option(default, help, *, choices=(), parse=None, noun="", omitted=""):
    """A Config field a user sets with a flag of the same name (``eps`` -> ``--eps``): ``help`` (the CLI appends
    the choices and the default), ``choices`` (the only valid values; ``validate`` refuses others, naming them
    ``noun`` or else the field's name), ``parse`` (the flag's text to a value; default: the field's own type),
    ``omitted`` (what no flag means, where the machine decides rather than ``default``)."""
    meta = {"help": help, "choices": choices, "parse": parse, "noun": noun, "omitted": omitted}
    return field(default=default, metadata=meta)


def parse_fraction(text: str) -> float:
    """Accept '8/255' as well as '0.0314': eps and step sizes are usually written as fractions of 255."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not math.isfinite(value):
        raise UsageError(f"'{text}' is not a number: write it as 0.03 or as a fraction such as 8/255")
    return value


def parse_fractions(text: str) -> tuple:
    """'0.5,0.75' (or '1/2,3/4') -> (0.5, 0.75)."""
    return tuple(parse_fraction(part) for part in text.split(","))


@dataclass
class Config:
    """Every option of a run. Each field made with ``option`` is a `train` flag; the one field that is not,
    ``preset``, records which preset --preset applied (before the other flags, which override it)."""

    # --- data and model ---
    data: str = option("", "a data directory written by `fastsglr prepare`")
    model: str = option("preactresnet18", "the network", choices=MODEL_NAMES)
    input_norm: str = option(
        "data",
        "data: normalise by the training images' per-channel mean/std inside the model; "
        "none: raw [0, 1] inputs, as the authors' SGLS code and TRADES",
        choices=INPUT_NORMS,
        noun="input normalisation",
    )
    augment: str = option(
        "flip-crop",
        "training augmentation: flip-crop (a random horizontal flip where the data set allows it, then a random crop "
        "of the zero-padded image) or none (the training images as they are: more robust overfitting and label "
        "memorisation, which the digits stand-in needs)",
        choices=AUGMENTATIONS,
        noun="augmentation",
    )
    loader: str = option(
        "",
        "ffcv: stream the betons; device: the whole data set held on the training device (both yield the same batches)",
        choices=LOADERS,
        omitted="ffcv where it can be imported, else device",
    )

    # --- adversarial objective (l-inf threat model, inputs in [0, 1]) ---
    method: str = option(
        "pgd-at",
        "pgd-at (Madry et al.), trades, or standard (clean inputs, no attack: KD's standard-trained teacher)",
        choices=METHODS,
    )
    eps: float = option(8 / 255, "l-inf radius, e.g. 8/255", parse=parse_fraction)
    step_size: float = option(2 / 255, "training attack step, e.g. 2/255", parse=parse_fraction)
    attack_steps: int = option(10, "training attack steps")
    trades_beta: float = option(6.0, "TRADES: weight of the KL term")
    attack_bn_mode: str = option(
        "eval",
        "BN mode while crafting training attacks (SGLS and AWP code: eval; Rice et al.: train)",
        choices=BN_MODES,
        noun="attack BN mode",
    )
    awp_gamma: float = option(
        0.0,
        "AWP (awp.py): size of the weight perturbation relative to ||w|| (0: off; Wu et "
        "al.'s code: 0.01 for PGD-AT, 0.005 for TRADES)",
    )
    awp_warmup: int = option(
        0,
        "AWP: epochs without the perturbation first (AWP's code: 0 for PGD-AT; TRADES "
        "--awp-warmup 10 counting epochs from 1, i.e. 9 here)",
    )

    # --- knowledge distillation and weight averaging (Chen et al., ICLR 2021: distill.py, swa.py) ---
    kd_teacher_adv: str = option(
        "", "KD: the adversarially trained teacher, a run directory (its best.pt) or a checkpoint ('': no KD)"
    )
    kd_teacher_std: str = option("", "KD: the standard-trained teacher (--method standard), a run or a checkpoint")
    kd_ce: float = option(0.3, "KD: weight of the hard-label CE (Chen et al.'s --coef_ce)")
    kd_adv: float = option(0.6, "KD: weight of the adversarial teacher's term (their --coef_kd2)")
    kd_std: float = option(0.1, "KD: weight of the standard teacher's term (their --coef_kd1)")
    kd_temperature: float = option(2.0, "KD: softmax temperature of student and teachers (their --temperature)")
    swa: bool = option(False, "average the weights (SWA); the averaged model is evaluated and reported")
    swa_start: float = option(
        0.275, "SWA: fraction of the epochs before the first average (Chen et al.: epoch 55 of 200)"
    )
    swa_every: int = option(1, "SWA: average every K epochs from the start (their --swa_c_epochs)")

    # --- label strategy ---
    labels: str = option(
        "sglr",
        "label strategy: hard, label smoothing, temporal ensembling or SGLR",
        choices=LABEL_STRATEGIES,
        noun="label strategy",
    )
    r: float = option(0.2, "LS smoothing and SGLR mixing weight of the refined label")
    temperature: float = option(1.5, "SGLR: temperature T of the softmax that forms the refined label")
    ema_momentum: float = option(0.9, "SGLR alpha and TE momentum: weight of the old per-sample row")
    lam: float = option(0.2, "SGLR: weight of the clean prediction in the refined label")
    ema_init: str = option(
        "onehot", "SGLR table start: onehot (released code) or zeros (Algorithm 1)", choices=EMA_INITS, noun="ema init"
    )
    sglr_warmup: int = option(0, "SGLR: epochs of hard-label training before refinement starts")
    te_weight: float = option(300.0, "TE: weight w of the mean over batch x classes of (softmax(z) - p^_i)^2")
    te_start: float = option(0.45, "TE: fraction of the epochs before which w = 0 and the table is frozen")
    te_end: float = option(
        0.75,
        "TE: fraction of the epochs where w's sigmoid ramp-up reaches --te-weight (Dong et "
        "al.'s train_te.py: 300, epochs 90 and 150 of 200)",
    )

    # --- optimisation (the paper's: SGD 0.9, wd 5e-4, lr 0.1, batch 128, 200 epochs, x0.1 at 100 and 150) ---
    epochs: int = option(200, "training epochs")
    batch_size: int = option(128, "images per training batch (over all ranks under torchrun)")
    lr: float = option(0.1, "initial learning rate")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "SGD weight decay")
    schedule: str = option(
        "piecewise", "piecewise: lr times --lr-decay at each milestone; cosine: to 0", choices=SCHEDULES
    )
    milestones: tuple = option(
        (0.5, 0.75), "piecewise: comma-separated fractions of the epochs where the lr drops", parse=parse_fractions
    )
    lr_decay: float = option(0.1, "piecewise: factor of the lr at each milestone")

    # --- evaluation after every epoch (or every eval_every-th) ---
    eval_every: int = option(
        1, "evaluate every K epochs and the last one (best.pt, the paper's best checkpoint, needs every epoch)"
    )
    eval_subset: int = option(0, "evaluate each epoch on a fixed seeded subset of N test images (0: all)")
    eval_steps: int = option(20, "PGD steps of the per-epoch evaluation")
    eval_step_size: float = option(0.0, "PGD step of the per-epoch evaluation (0: eps/4)", parse=parse_fraction)
    hessian_probes: int = option(
        0,
        "per epoch, the Hessian trace of the adversarial training loss on a fixed batch "
        "by Hutchinson's estimator with this many probes (Fig. B.7, sharpness.py; 0: off)",
    )

    # --- run ---
    device: str = option("cpu", "the torch device", choices=DEVICES, omitted="cuda when available")
    engine: str = option(
        "",
        "fast: compiled (CUDA: channels-last, CUDA graph); reference: eager",
        choices=ENGINES,
        omitted="fast on CUDA, reference on CPU",
    )
    precision: str = option(
        "", "the fast engine's compute precision", choices=PRECISIONS, omitted="bf16 on CUDA, fp32 on CPU"
    )
    sync_bn: bool = option(
        False, "torchrun: SyncBatchNorm over the global batch (CUDA only) instead of per-rank BatchNorm"
    )
    seed: int = option(0, "seed of initialisation, attacks, order and augmentation")
    out: str = option("", "the run directory to write")
    preset: str = ""  # not an option: apply_preset records the --preset applied

    @property
    def resolved_eval_step_size(self) -> float:
        return self.eval_step_size or self.eps / 4

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"unknown config keys {unknown}: the file was written by another fastsglr version")
        d = dict(d)
        if isinstance(d.get("milestones"), list):
            d["milestones"] = tuple(d["milestones"])
        for f in fields(cls):  # a hand-edited or damaged file: a wrong type would fail far from here
            expected = type(f.default)
            value = d.get(f.name, f.default)
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if expected is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                raise UsageError(f"config key '{f.name}' holds {value!r}, which is not of type {expected.__name__}")
        return cls(**d)


OPTIONS = {f.name: f for f in fields(Config) if "help" in f.metadata}  # the fields a user sets, each with its flag

PRESETS = {
    # The paper's SGLR (Sec. 4, Table 4's best r and T).
    "paper": dict(labels="sglr", r=0.2, temperature=1.5, ema_momentum=0.9, lam=0.2, ema_init="onehot", sglr_warmup=0),
    # The authors' released code (devicerxx/SGLS losses/loss.py, class SGLS): no r-mixing, T = 1, and plain CE while
    # epoch < es. run_sgls.sh means es = 90 and main_adv.py counts epochs from 1: 89 CE epochs (ours count from 0).
    "sgls-code": dict(
        labels="sglr", r=1.0, temperature=1.0, ema_momentum=0.9, lam=0.2, ema_init="onehot", sglr_warmup=89
    ),
    # The CPU stand-in of `reproduce` (docs/reproduce.md, "The CPU stand-in"), found by a search over width, eps,
    # augmentation and data: on 8x8 synthetic data (2,000 training images) PGD-AT robustly overfits and, under label
    # noise, memorises its corrupted labels, as on CIFAR; a run took 5-9 minutes on one core of a shared 2-core CPU.
    "standin": dict(
        model="convmlp",
        augment="none",
        eps=4 / 255,
        step_size=1 / 255,
        attack_steps=5,
        epochs=100,
        batch_size=64,
        lr=0.05,
        eval_steps=10,
    ),
    # A few minutes on 2 CPU cores: the small CNN on 8x8 digits, where eps 8/255 would be too weak to matter.
    "demo": dict(
        model="smallcnn",
        eps=32 / 255,
        step_size=8 / 255,
        attack_steps=5,
        epochs=30,
        batch_size=64,
        lr=0.05,
        eval_steps=10,
    ),
}


def apply_preset(cfg: Config, name: str) -> Config:
    if name not in PRESETS:
        raise UsageError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(cfg, preset=name, **PRESETS[name])


def _check_choice(name, value, choices):
    if value not in choices:
        raise UsageError(f"unknown {name} '{value}': choose one of {', '.join(choices)}")


def check_range(name, value, lo, hi, lo_open=False, hi_open=False):
    """A number of flag ``name`` in [lo, hi] (or open at either end); NaN and infinities are never in range."""
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if below or above or not math.isfinite(value):
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise UsageError(f"--{name.replace('_', '-')} {value} is out of range: it must lie in {lb}{lo}, {hi}{rb}")


def resolve_device_defaults(cfg: Config) -> Config:
    """Fill the settings whose default depends on the machine: the fast engine in bf16 on CUDA; on CPU the
    reference engine in fp32 (compiling on a CPU costs more than it saves on small runs); the FFCV loader where FFCV
    can be imported, else the device-held one (both yield the same batches)."""
    from .data.beton import ffcv_available

    on_cuda = cfg.device == "cuda"
    return dataclasses.replace(
        cfg,
        engine=cfg.engine or ("fast" if on_cuda else "reference"),
        precision=cfg.precision or ("bf16" if on_cuda and cfg.engine != "reference" else "fp32"),
        loader=cfg.loader or ("ffcv" if ffcv_available() else "device"),
    )


def validate(cfg: Config) -> Config:
    """Reject a bad config before any work starts, with a one-line message naming the fix."""
    cfg = resolve_device_defaults(cfg)

    for f in fields(cfg):
        if f.metadata.get("choices"):
            _check_choice(f.metadata["noun"] or f.name, getattr(cfg, f.name), f.metadata["choices"])
    if cfg.engine == "reference" and cfg.precision != "fp32":
        raise UsageError(f"--precision {cfg.precision} needs the fast engine: add --engine fast")
    if cfg.loader == "ffcv":
        from .data.beton import require_ffcv

        require_ffcv()
    if cfg.sync_bn and cfg.device != "cuda":
        raise UsageError("--sync-bn needs CUDA GPUs (SyncBatchNorm has no CPU kernel): drop --sync-bn")
    check_range("eps", cfg.eps, 0, 1)
    check_range("step_size", cfg.step_size, 0, 1)
    check_range("attack_steps", cfg.attack_steps, 0, MAX_STEPS)
    check_range("trades_beta", cfg.trades_beta, 0, 1e4)
    check_range("r", cfg.r, 0, 1)
    check_range("temperature", cfg.temperature, 0, 1e3, lo_open=True)
    check_range("ema_momentum", cfg.ema_momentum, 0, 1, hi_open=True)
    check_range("lam", cfg.lam, 0, 1)
    check_range("sglr_warmup", cfg.sglr_warmup, 0, 1_000_000)
    check_range("te_weight", cfg.te_weight, 0, 1e6)
    check_range("te_start", cfg.te_start, 0, 1)
    check_range("te_end", cfg.te_end, 0, 1)
    check_range("awp_gamma", cfg.awp_gamma, 0, 1)
    check_range("awp_warmup", cfg.awp_warmup, 0, 1_000_000)
    check_range("kd_ce", cfg.kd_ce, 0, 1e3)
    check_range("kd_adv", cfg.kd_adv, 0, 1e3)
    check_range("kd_std", cfg.kd_std, 0, 1e3)
    check_range("kd_temperature", cfg.kd_temperature, 0, 1e3, lo_open=True)
    check_range("swa_start", cfg.swa_start, 0, 1)
    check_range("swa_every", cfg.swa_every, 1, 1_000_000)
    check_range("epochs", cfg.epochs, 1, 1_000_000)
    check_range("batch_size", cfg.batch_size, 1, 1_000_000)
    check_range("lr", cfg.lr, 0, 100, lo_open=True)
    check_range("momentum", cfg.momentum, 0, 1, hi_open=True)
    check_range("weight_decay", cfg.weight_decay, 0, 1)
    check_range("eval_every", cfg.eval_every, 1, 1_000_000)
    check_range("eval_subset", cfg.eval_subset, 0, 10**9)
    check_range("eval_steps", cfg.eval_steps, 0, MAX_STEPS)
    check_range("eval_step_size", cfg.eval_step_size, 0, 1)
    check_range("hessian_probes", cfg.hessian_probes, 0, 10_000)
    check_range("seed", cfg.seed, 0, SEED_MAX)
    check_range("lr_decay", cfg.lr_decay, 0, 1, lo_open=True)
    for m in cfg.milestones:
        check_range("milestones", m, 0, 1)
    _check_combination(cfg)
    return cfg


def _check_combination(cfg: Config):
    """Options that mean nothing together: KD replaces PGD-AT's hard-label target (Chen et al.), so it needs both
    teachers, PGD-AT and hard labels; standard training has no adversarial or clean predictions to refine."""
    if cfg.method == "standard" and cfg.labels in ("te", "sglr"):
        raise UsageError(
            f"--labels {cfg.labels} refines labels from adversarial and clean predictions, which --method standard "
            f"does not make: use --labels hard or ls"
        )
    if not (cfg.kd_teacher_adv or cfg.kd_teacher_std):
        return
    if not (cfg.kd_teacher_adv and cfg.kd_teacher_std):
        missing = "--kd-teacher-std" if cfg.kd_teacher_adv else "--kd-teacher-adv"
        raise UsageError(f"KD (Chen et al.) distils from two teachers: add {missing}")
    if cfg.method != "pgd-at":
        raise UsageError(f"KD distils into PGD-AT (Chen et al.), not --method {cfg.method}: use --method pgd-at")
    if cfg.labels != "hard":
        raise UsageError(
            f"KD's teachers replace the label strategy's soft target (Chen et al. keep only the hard-label CE): "
            f"use --labels hard instead of --labels {cfg.labels}"
        )


def n_epochs(n: int) -> str:
    """'1 epoch', '30 epochs'."""
    return f"{n} epoch{'' if n == 1 else 's'}"
