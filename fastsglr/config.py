"""One config object for a training run, with named presets and up-front validation.

Every option of a run lives here; the CLI only maps flags onto it. A preset is a set of overrides on top of the
defaults (which are the paper's settings), and explicit flags override the preset.
"""
import dataclasses
import json
import math
from dataclasses import dataclass, fields

from .errors import UsageError

METHODS = ("pgd-at", "trades")
LABEL_STRATEGIES = ("hard", "ls", "te", "sglr")
SCHEDULES = ("piecewise", "cosine")
BN_MODES = ("eval", "train")
EMA_INITS = ("onehot", "zeros")
ENGINES = ("reference", "fast")
PRECISIONS = ("fp32", "bf16", "fp16")
LOADERS = ("ffcv", "device")
INPUT_NORMS = ("data", "none")
DEVICES = ("cpu", "cuda")
# Seeds reach torch, numpy and FFCV (which derive per-epoch seeds from them); 31 bits fit every one of them.
SEED_MAX = 2**31 - 1
MAX_STEPS = 10_000  # attack steps, training and evaluation alike: more is a typo, not a stronger attack


@dataclass
class Config:
    # --- data and model ---
    data: str = ""                     # a directory written by `fastsglr prepare`
    model: str = "preactresnet18"
    input_norm: str = "data"           # data (the training images' per-channel mean/std, inside the model) | none (raw
                                       # [0, 1] inputs, as the authors' SGLS code and TRADES)
    loader: str = ""                   # ffcv (streaming) | device (the data set held on the training device);
                                       # "" = ffcv where it can be imported, else device

    # --- adversarial objective (l-inf threat model, inputs in [0, 1]) ---
    method: str = "pgd-at"             # pgd-at (Madry) | trades
    eps: float = 8 / 255
    step_size: float = 2 / 255
    attack_steps: int = 10
    trades_beta: float = 6.0
    attack_bn_mode: str = "eval"       # BN mode while crafting training attacks (SGLS/AWP: eval; Rice et al.: train)
    awp_gamma: float = 0.0             # AWP (awp.py): relative size of the weight perturbation; 0 = off (Wu et al.'s
                                       # code: 0.01 for PGD-AT, 0.005 for TRADES)
    awp_warmup: int = 0                # AWP: epochs without perturbation first (AWP's code: 0 for PGD-AT; TRADES
                                       # --awp-warmup 10 counting epochs from 1, i.e. 9 here)

    # --- label strategy ---
    labels: str = "sglr"               # hard | ls | te | sglr
    r: float = 0.2                     # LS smoothing and SGLR mixing weight of the refined label
    temperature: float = 1.5           # SGLR: T of the softmax that forms f~
    ema_momentum: float = 0.9          # SGLR alpha and TE momentum: weight of the old per-sample row
    lam: float = 0.2                   # SGLR: weight of the clean prediction in f~
    ema_init: str = "onehot"           # SGLR table start: onehot (released code) | zeros (Algorithm 1)
    sglr_warmup: int = 0               # SGLR: epochs of hard-label training before refinement starts
    te_weight: float = 300.0           # TE: weight w of the mean over batch x classes of (softmax(z) - p^_i)^2
    te_start: float = 0.45             # TE: fraction of the epochs before which w = 0 and the table is frozen
    te_end: float = 0.75               # TE: fraction of the epochs where w's sigmoid ramp-up reaches te_weight
                                       # (Dong et al.'s train_te.py: 300, epochs 90 and 150 of 200)

    # --- optimisation (the paper's: SGD 0.9, wd 5e-4, lr 0.1, batch 128, 200 epochs, x0.1 at 100 and 150) ---
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "piecewise"        # piecewise | cosine
    milestones: tuple = (0.5, 0.75)    # piecewise: fractions of `epochs` where lr is multiplied by lr_decay
    lr_decay: float = 0.1

    # --- evaluation after every epoch (or every eval_every-th) ---
    eval_every: int = 1                # evaluate every K epochs and the last one (best.pt needs them all: 1)
    eval_subset: int = 0               # 0 = whole test set, else a fixed seeded subset of this many images
    eval_steps: int = 20
    eval_step_size: float = 0.0        # 0 = eps / 4
    hessian_probes: int = 0            # Hutchinson probes of the training loss's Hessian trace per epoch (Fig. B.7,
                                       # sharpness.py); 0 = not measured

    # --- run ---
    device: str = "cpu"
    engine: str = ""                   # fast (compiled; CUDA: channels-last + CUDA graph) | reference; "" = by device
    precision: str = ""                # fp32 | bf16 | fp16 (fast engine); "" = by device
    sync_bn: bool = False              # torchrun: SyncBatchNorm over the global batch (CUDA) instead of per-rank BN
    seed: int = 0
    out: str = ""
    preset: str = ""

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


PRESETS = {
    # The paper's SGLR (Sec. 4, Table 4's best r and T).
    "paper": dict(labels="sglr", r=0.2, temperature=1.5, ema_momentum=0.9, lam=0.2, ema_init="onehot", sglr_warmup=0),
    # The authors' released code (devicerxx/SGLS losses/loss.py, class SGLS): no r-mixing, T = 1, and plain CE while
    # epoch < es. run_sgls.sh means es = 90 and main_adv.py counts epochs from 1: 89 CE epochs (ours count from 0).
    "sgls-code": dict(labels="sglr", r=1.0, temperature=1.0, ema_momentum=0.9, lam=0.2, ema_init="onehot",
                      sglr_warmup=89),
    # A few minutes on 2 CPU cores: the small CNN on 8x8 digits, where eps 8/255 would be too weak to matter.
    "demo": dict(model="smallcnn", eps=32 / 255, step_size=8 / 255, attack_steps=5, epochs=30,
                 batch_size=64, lr=0.05, eval_steps=10),
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
    return dataclasses.replace(cfg, engine=cfg.engine or ("fast" if on_cuda else "reference"),
                               precision=cfg.precision or ("bf16" if on_cuda and cfg.engine != "reference" else "fp32"),
                               loader=cfg.loader or ("ffcv" if ffcv_available() else "device"))


def validate(cfg: Config) -> Config:
    """Reject a bad config before any work starts, with a one-line message naming the fix."""
    from .models import MODEL_NAMES

    cfg = resolve_device_defaults(cfg)

    _check_choice("model", cfg.model, MODEL_NAMES)
    _check_choice("input normalisation", cfg.input_norm, INPUT_NORMS)
    _check_choice("method", cfg.method, METHODS)
    _check_choice("label strategy", cfg.labels, LABEL_STRATEGIES)
    _check_choice("schedule", cfg.schedule, SCHEDULES)
    _check_choice("attack BN mode", cfg.attack_bn_mode, BN_MODES)
    _check_choice("ema init", cfg.ema_init, EMA_INITS)
    _check_choice("engine", cfg.engine, ENGINES)
    _check_choice("precision", cfg.precision, PRECISIONS)
    if cfg.engine == "reference" and cfg.precision != "fp32":
        raise UsageError(f"--precision {cfg.precision} needs the fast engine: add --engine fast")
    _check_choice("loader", cfg.loader, LOADERS)
    if cfg.loader == "ffcv":
        from .data.beton import require_ffcv

        require_ffcv()
    _check_choice("device", cfg.device, DEVICES)
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
    return cfg


def n_epochs(n: int) -> str:
    """'1 epoch', '30 epochs'."""
    return f"{n} epoch{'' if n == 1 else 's'}"


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
