"""`fastsglr eval`: how robust a checkpoint is, and whether that number can be trusted.

Attacks, l-inf at radius eps on inputs in [0, 1], the model in eval mode:
- ``clean``: no attack.
- ``pgd<K>`` (``pgd20`` is PGD-20): ``attacks.pgd``, K steps of eps/4 (2/255 at 8/255) from a uniform random start.
- ``pgd20-sgls``: the PGD-20 of the authors' final evaluator (devicerxx/SGLS ``pgd_attack.py``, TRADES' setting):
  radius 0.031 and step 0.003 from a uniform random start, at the paper's eps 8/255; at another eps both scale with
  it (0.031 / (8/255) and 0.003 / (8/255) times eps), so a stand-in data set gets the same attack relative to its
  threat model. One difference remains: their random start is not clipped to [0, 1] before the first gradient, ours
  (``attacks.pgd``) is; every later iterate is clipped in both. The paper does not say which PGD-20 its tables print.
- ``cw``: the same PGD on the CW margin loss, 30 steps of eps/4.
- ``autoattack``: AutoAttack "standard" (Croce & Hein, 2020) assembled from torchattacks' parts with the original's
  settings set explicitly (torchattacks defaults APGD/FAB to 10 steps): APGD-CE and APGD-T (9 targets) with 100
  iterations, FAB-T (9 targets, 100 steps), Square (5,000 queries), one restart each. As in the original, the parts
  run in sequence, each only on the images still robust: APGD-CE on those the model classifies correctly, APGD-T on
  those APGD-CE failed to break, and so on. An image is robust only if it survives every part (the worst case, which
  is AutoAttack's accuracy). The report gives, per part, the accuracy after it (cumulative: after APGD-CE, after
  APGD-CE and APGD-T, ...) and the number of images it ran on; a part has no accuracy of its own.
- ``square``: Square alone (black-box, 5,000 queries).
- ``transfer``: PGD-20 examples crafted on a ``source`` checkpoint (black-box for the evaluated model).
  ``transfer-<attack>`` crafts them with another white-box attack on the source: ``transfer-pgd<K>`` (PGD-K) or
  ``transfer-cw`` (CW, settings as above); Table B.3's black-box columns are ``transfer-pgd10`` and ``transfer-cw``.
Every attack's output is projected onto the eps-ball and [0, 1] before it is scored, so no attack can step outside
the threat model. Each attack reports accuracy and the expected calibration error of the model on its outputs.

Sanity checks against gradient masking (Athalye et al., 2018; Carlini et al., 2019), cheap and on by default, on
the first ``check_images`` images: PGD-20 accuracy does not rise with eps and is 0 at eps = 0.5 (every pixel can
reach mid-grey); PGD-20 is not above PGD-1 (one step of size eps); black-box accuracy (Square and every transfer
attack) is not below white-box accuracy, i.e. the worst case over the white-box attacks that ran (PGD-20 and any of
PGD-K, CW, APGD-CE, APGD-T, FAB-T). AutoAttack's Square sees only the images its white-box parts failed to break,
so it has no accuracy to compare; its check is the signal AutoAttack's authors describe: Square breaks (almost) none
of the images every white-box attack failed on. A comparison passes within one image or half a point, whichever is
larger. A failure is printed as a warning of possible gradient masking and recorded in the report.
"""

import dataclasses
import os
import re
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from .attacks import pgd, project
from .checkpoint import check_checkpoint_fits_data, check_same_data, load_checkpoint, model_from_state
from .config import MAX_STEPS, SEED_MAX, check_range
from .data.datadir import read_data_dir, sha256
from .data.loaders import DeviceLoader
from .errors import UsageError
from .files import check_free_space, check_output_file, write_json
from .metrics import CalibrationMeter

ATTACKS = ("clean", "pgd20", "pgd20-sgls", "cw", "autoattack", "square", "transfer")
DEFAULT_ATTACKS = ("clean", "pgd20", "pgd20-sgls", "cw", "autoattack")
AUTOATTACK_PARTS = ("apgd-ce", "apgd-t", "fab-t", "square")
WHITE_BOX = ("pgd20-sgls", "cw", "autoattack/apgd-ce", "autoattack/apgd-t", "autoattack/fab-t")  # and every pgdK
NAMES = {
    "clean": "natural",
    "pgd20-sgls": "PGD-20 (SGLS code)",
    "cw": "CW-inf",
    "autoattack": "AutoAttack",
    "square": "Square",
    "transfer": "transfer",
    "apgd-ce": "APGD-CE",
    "apgd-t": "APGD-T",
    "fab-t": "FAB-T",
}
_PGD = re.compile(r"pgd(\d+)$")
_TRANSFER = re.compile(r"transfer(?:-(cw|pgd\d+))?$")  # group 1: the crafting attack, absent for plain 'transfer'
PGD_EPS_LIMIT = 0.5  # at this radius PGD can move every pixel to mid-grey: no model keeps any accuracy
# The report's layout and what its numbers mean; 2: AutoAttack's parts run on the images still robust.
REPORT_FORMAT = 2
REPORT_BYTES = 64 << 10
# pgd_attack.py's radius and step, both given for the paper's eps 8/255.
SGLS_PGD_EPS, SGLS_PGD_STEP, SGLS_PGD_AT_EPS = (
    0.031,
    0.003,
    8 / 255,
)  # a report with both of a run's checkpoints takes a few tens of kB
REPORT_KEYS = ("attacks", "run_dir")  # a report of one checkpoint holds the first, of a run directory the second


@dataclass(frozen=True)
class AttackSettings:
    """How strong each attack is. The defaults are the standard ones; tests shrink them to run on a CPU."""

    cw_steps: int = 30
    apgd_steps: int = 100  # APGD-CE and APGD-T iterations
    fab_steps: int = 100
    square_queries: int = 5000
    targets: int = 9  # APGD-T / FAB-T target classes (at most classes - 1)
    transfer_steps: int = 20  # PGD steps on the source model of plain 'transfer' (transfer-pgdK takes K)
    check_images: int = 1000  # images the eps sweep and the PGD-1 check run on


STANDARD = AttackSettings()


def sgls_pgd(eps) -> tuple:
    """(radius, step) of ``pgd20-sgls`` for an evaluation at ``eps``: exactly (0.031, 0.003) at 8/255."""
    scale = eps / SGLS_PGD_AT_EPS
    return SGLS_PGD_EPS * scale, SGLS_PGD_STEP * scale


def display_name(attack: str) -> str:
    """'pgd20' -> 'PGD-20', 'autoattack/square' -> 'AutoAttack: Square', 'transfer-cw' -> 'transfer CW-inf'."""
    if "/" in attack:
        whole, part = attack.split("/")
        return f"{display_name(whole)}: {display_name(part)}"
    transfer = _TRANSFER.match(attack)
    if transfer and transfer.group(1):
        return f"{NAMES['transfer']} {display_name(transfer.group(1))}"
    match = _PGD.match(attack)
    return f"PGD-{match.group(1)}" if match else NAMES.get(attack, attack)


def _is_white_box(name) -> bool:
    return name in WHITE_BOX or bool(_PGD.match(name))


def _is_black_box(name) -> bool:
    """Square alone and every transfer attack; AutoAttack's Square has a check of its own (see the docstring)."""
    return name == "square" or bool(_TRANSFER.match(name))


def _crafting_attack(name, settings: AttackSettings):
    """The white-box attack a transfer attack runs on the source model; None for an attack that is not transfer."""
    transfer = _TRANSFER.match(name)
    if not transfer:
        return None
    return transfer.group(1) or f"pgd{settings.transfer_steps}"


def _is_known(name) -> bool:
    transfer = _TRANSFER.match(name)
    if transfer and transfer.group(1):
        return _is_known(transfer.group(1))
    match = _PGD.match(name)
    return name in ATTACKS or bool(match and int(match.group(1)) >= 1)


def parse_attacks(attacks, has_source) -> tuple:
    """Attack names from a list or a comma-separated string, checked before any work starts."""
    names = tuple(a.strip() for a in (attacks.split(",") if isinstance(attacks, str) else attacks) if a.strip())
    for name in names:
        if not _is_known(name):
            raise UsageError(
                f"unknown attack '{name}': choose from {', '.join(ATTACKS)}, pgdK (K steps, e.g. "
                f"pgd10) or transfer-pgdK / transfer-cw"
            )
    if not names:
        raise UsageError("--attacks is empty: name at least one attack, e.g. clean,pgd20")
    for name in names:
        steps = re.search(r"pgd(\d+)$", name)
        if steps and int(steps.group(1)) > MAX_STEPS:  # training caps its attack steps alike
            raise UsageError(f"attack '{name}' takes {steps.group(1)} steps: choose at most pgd{MAX_STEPS}")
    if any(_TRANSFER.match(name) for name in names) and not has_source:
        raise UsageError("the transfer attack needs --source: the checkpoint its adversarial examples are crafted on")
    return names


# ------------------------------------------------------------------------------------------------ attacks per batch


def _pgd_attack(model, eps, steps, step_size=None, loss="ce"):
    return lambda x, y: pgd(model, x, y, eps=eps, step_size=step_size or eps / 4, steps=steps, loss=loss)


def _torchattacks_part(part, model, eps, num_classes, settings: AttackSettings, seed):
    """One AutoAttack part from torchattacks, every setting explicit (its defaults are not the original's)."""
    import torchattacks as ta

    common = dict(norm="Linf", eps=eps, n_restarts=1, seed=seed)
    if part == "apgd-ce":
        return ta.APGD(model, steps=settings.apgd_steps, loss="ce", **common)
    if part == "square":
        return ta.Square(model, n_queries=settings.square_queries, **common)
    if part == "apgd-t":
        attack = ta.APGDT(model, steps=settings.apgd_steps, n_classes=num_classes, **common)
    else:
        attack = ta.FAB(model, steps=settings.fab_steps, multi_targeted=True, n_classes=num_classes, **common)
    # torchattacks targets all classes - 1; the original targets the 9 most likely others (CIFAR-100 too).
    attack.n_target_classes = min(settings.targets, num_classes - 1)
    return attack


def _build_attack(name, model, eps, num_classes, settings, seed, source):
    crafting = _crafting_attack(name, settings)
    if crafting:  # white-box on the source; the caller scores its examples on the model
        return _build_attack(crafting, source, eps, num_classes, settings, seed, None)
    if name == "clean":
        return lambda x, y: x
    if name == "cw":
        return _pgd_attack(model, eps, settings.cw_steps, loss="cw")
    if name == "square":
        return _torchattacks_part(name, model, eps, num_classes, settings, seed)
    if name == "pgd20-sgls":
        radius, step = sgls_pgd(eps)
        return _pgd_attack(model, radius, 20, step)
    return _pgd_attack(model, eps, int(_PGD.match(name).group(1)))


def _attack_settings(name, settings: AttackSettings, eps):
    """What the report records about an attack's strength."""
    if name == "clean":
        return {}
    crafting = _crafting_attack(name, settings)
    if crafting:
        return {**_attack_settings(crafting, settings, eps), "crafted_on": "source"}
    common = {"eps": eps}
    if name == "cw":
        return {**common, "steps": settings.cw_steps, "step_size": eps / 4, "loss": "cw", "random_start": True}
    if name == "square":
        return {**common, "queries": settings.square_queries, "restarts": 1}
    if name == "pgd20-sgls":
        radius, step = sgls_pgd(eps)
        return {
            "eps": radius,
            "steps": 20,
            "step_size": step,
            "loss": "ce",
            "random_start": True,
            "source": "devicerxx/SGLS pgd_attack.py (eps 0.031, step 0.003 at eps 8/255)",
        }
    if name == "autoattack":
        return {
            **common,
            "version": "standard",
            "parts": list(AUTOATTACK_PARTS),
            "parts_run_on": "survivors",
            "apgd_steps": settings.apgd_steps,
            "fab_steps": settings.fab_steps,
            "targets": settings.targets,
            "square_queries": settings.square_queries,
            "restarts": 1,
        }
    return {**common, "steps": int(_PGD.match(name).group(1)), "step_size": eps / 4, "loss": "ce", "random_start": True}


# ------------------------------------------------------------------------------------------------ scoring


@dataclass
class Outcome:
    """Which images survived an attack (a device bool vector), and the ECE on the attack's outputs. For AutoAttack
    and its parts the vector is cumulative (survived this part and every earlier one), ``ece`` is None (no single
    output per image) and ``ran_on`` counts the images the part was run on."""

    correct: torch.Tensor
    ece: float | None
    seconds: float
    ran_on: int | None = None

    def acc(self, m=None) -> float:
        """Accuracy in percent, over all images or the first m."""
        kept = self.correct[:m]
        return 100.0 * kept.sum().item() / len(kept)


def _score(model, attack, images, labels, eps, batch_size, seed, desc) -> Outcome:
    """Run an attack batch by batch (seeded afresh, so the result does not depend on what ran before)."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    meter = CalibrationMeter(images.device)
    correct = torch.empty(len(labels), dtype=torch.bool, device=images.device)
    bar = tqdm(
        range(0, len(labels), batch_size), desc=desc, unit="batch", leave=False, disable=not sys.stdout.isatty()
    )  # as training's: quiet in logs and pipes
    for start in bar:
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        x_adv = project(attack(x, y), x, eps)
        with torch.no_grad():
            logits = model(x_adv)
        meter.update(logits, y)
        correct[start : start + batch_size] = logits.argmax(1) == y
    return Outcome(correct, meter.read()["ece"], time.perf_counter() - t0)


def _autoattack(model, images, labels, *, eps, num_classes, settings, seed, batch_size) -> dict:
    """AutoAttack as the original runs it: each part only on the images that the model classifies correctly and
    that every earlier part failed to break. Outcomes keyed 'autoattack/<part>' (cumulative) and 'autoattack'.

    torchattacks' MultiAttack chains attacks the same way, but it judges a part's raw output (not projected onto
    the threat model), and it keeps neither per-part times nor, outside its save(), per-part counts."""
    clean = _score(model, lambda x, y: x, images, labels, eps, batch_size, seed, "AutoAttack: clean")
    robust, seconds, outcomes = clean.correct, clean.seconds, {}
    for part in AUTOATTACK_PARTS:
        name = f"autoattack/{part}"
        todo = robust.nonzero().squeeze(1)
        attack = _torchattacks_part(part, model, eps, num_classes, settings, seed)
        scored = _score(model, attack, images[todo], labels[todo], eps, batch_size, seed, display_name(name))
        robust = robust.clone()  # the previous part's outcome keeps its own vector
        robust[todo] = scored.correct
        seconds += scored.seconds
        outcomes[name] = Outcome(robust, None, scored.seconds, len(todo))
    outcomes["autoattack"] = Outcome(robust, None, seconds)
    return outcomes


def _run_attacks(model, images, labels, *, eps, attacks, num_classes, settings, seed, batch_size, source):
    """Outcomes keyed by attack name; AutoAttack's parts as 'autoattack/<part>' plus the worst case 'autoattack'."""
    outcomes = {}
    for name in attacks:
        if name == "autoattack":
            outcomes.update(
                _autoattack(
                    model,
                    images,
                    labels,
                    eps=eps,
                    num_classes=num_classes,
                    settings=settings,
                    seed=seed,
                    batch_size=batch_size,
                )
            )
        else:
            attack = _build_attack(name, model, eps, num_classes, settings, seed, source)
            outcomes[name] = _score(model, attack, images, labels, eps, batch_size, seed, display_name(name))
    return outcomes


# ------------------------------------------------------------------------------------------------ sanity checks


def _check(name, passed, message, **values) -> dict:
    return {"name": name, "passed": bool(passed), "message": message, "values": values}


def eps_grid(eps) -> list:
    """The sweep's radii: 0, eps/2, eps, 2 eps, 4 eps and 0.5, capped at 0.5."""
    return sorted({round(min(e, PGD_EPS_LIMIT), 6) for e in (0.0, eps / 2, eps, 2 * eps, 4 * eps, PGD_EPS_LIMIT)})


def sanity_checks(model, images, labels, *, eps, outcomes, settings, seed, batch_size) -> list:
    """The gradient-masking checks on the first ``settings.check_images`` images; see the module docstring."""
    m = min(len(labels), settings.check_images)
    x, y = images[:m], labels[:m]
    tol = max(0.5, 100.0 / m)

    def pgd_outcome(radius, steps=20, step_size=None):
        attack = _pgd_attack(model, radius, steps, step_size)
        return _score(model, attack, x, y, radius, batch_size, seed, f"check PGD-{steps} eps {radius:.3f}")

    pgd20 = outcomes["pgd20"] if "pgd20" in outcomes else pgd_outcome(eps)
    white = pgd20.acc(m)
    sweep = {e: white if e == round(eps, 6) else pgd_outcome(e).acc() for e in eps_grid(eps)}
    accs = list(sweep.values())
    rises = any(later > earlier + tol for earlier, later in zip(accs, accs[1:]))
    shown = ", ".join(f"{e * 255:.1f}/255: {a:.1f}%" for e, a in sweep.items())
    checks = [
        _check(
            "accuracy falls as eps grows",
            not rises,
            f"PGD-20 accuracy {'rises' if rises else 'does not rise'} with eps ({shown})",
            sweep=sweep,
        ),
        _check(
            f"no accuracy left at eps {PGD_EPS_LIMIT}",
            accs[-1] <= tol,
            f"PGD-20 accuracy at eps {PGD_EPS_LIMIT} is {accs[-1]:.1f}% (expected 0)",
            acc=accs[-1],
        ),
    ]
    one_step = pgd_outcome(eps, steps=1, step_size=eps).acc()
    checks.append(
        _check(
            "PGD-20 is not above PGD-1",
            white <= one_step + tol,
            f"PGD-20 accuracy {white:.1f}% vs PGD-1 (one step of eps) {one_step:.1f}%",
            pgd20=white,
            pgd1=one_step,
        )
    )
    # Black-box against the strongest white-box evidence at hand: PGD-20 alone can lose to 5,000 Square queries on
    # a barely trained model without any masking; a black-box attack beating PGD, CW and APGD together is the sign.
    white_box = {"pgd20": pgd20, **{n: o for n, o in outcomes.items() if _is_white_box(n)}}
    survivors = torch.stack([o.correct[:m] for o in white_box.values()]).all(dim=0)
    strongest = 100.0 * survivors.sum().item() / m
    names = " + ".join(display_name(n) for n in white_box)
    for name in filter(_is_black_box, outcomes):
        black = outcomes[name].acc(m)
        checks.append(
            _check(
                f"{display_name(name)} (black-box) is not below white-box",
                black >= strongest - tol,
                f"{display_name(name)} (black-box) accuracy {black:.1f}% vs white-box ({names}) {strongest:.1f}%",
                black_box=black,
                white_box=strongest,
                white_box_attacks=list(white_box),
            )
        )
    if "autoattack" in outcomes:
        # Square ran only where APGD-CE, APGD-T and FAB-T failed: an image it breaks that every white-box attack
        # failed on is the gradient-masking signal (Croce & Hein, 2020); `tol` allows for a stray one.
        kept = (survivors & outcomes["autoattack/square"].correct[:m]).sum().item()
        after, broken = 100.0 * kept / m, survivors.sum().item() - kept
        checks.append(
            _check(
                "AutoAttack: Square (black-box) breaks no image white-box failed on",
                after >= strongest - tol,
                f"AutoAttack: Square (black-box) broke {broken} of the {survivors.sum().item()} images "
                f"every white-box attack ({names}) failed on: accuracy {strongest:.1f}% -> {after:.1f}%",
                white_box=strongest,
                after_square=after,
                broken=broken,
                white_box_attacks=list(white_box),
            )
        )
    return [dict(c, images=m, tolerance=tol) for c in checks]


# ------------------------------------------------------------------------------------------------ entry points


def evaluate_model(
    model,
    images,
    labels,
    *,
    eps,
    num_classes,
    attacks=DEFAULT_ATTACKS,
    settings=STANDARD,
    seed=0,
    batch_size=256,
    source=None,
    checks=True,
    log=print,
) -> dict:
    """Attack ``model`` on (images, labels) already on its device; returns {"attacks": ..., "checks": ...}."""
    attacks = parse_attacks(attacks, source is not None)
    model.eval()
    if source is not None:
        source.eval()
    outcomes = _run_attacks(
        model,
        images,
        labels,
        eps=eps,
        attacks=attacks,
        num_classes=num_classes,
        settings=settings,
        seed=seed,
        batch_size=batch_size,
        source=source,
    )
    results = {}
    for name in attacks:
        results[name] = {
            "acc": outcomes[name].acc(),
            "ece": outcomes[name].ece,
            "seconds": outcomes[name].seconds,
            "settings": _attack_settings(name, settings, eps),
        }
        if name == "autoattack":  # per part: the accuracy after it (cumulative) and the images it ran on
            parts = {p: outcomes[f"{name}/{p}"] for p in AUTOATTACK_PARTS}
            results[name]["parts"] = {
                p: {"acc": o.acc(), "images": o.ran_on, "seconds": o.seconds} for p, o in parts.items()
            }
    found = (
        sanity_checks(
            model, images, labels, eps=eps, outcomes=outcomes, settings=settings, seed=seed, batch_size=batch_size
        )
        if checks
        else []
    )
    for check in found:
        if not check["passed"]:
            log(f"WARNING: possible gradient masking: {check['name']} failed: {check['message']}")
    return {"attacks": results, "checks": found, "checks_passed": all(c["passed"] for c in found)}


def load_test_images(data, n, device):
    """The first n test images and labels of a data directory, on the device (all of them when n is None)."""
    info = read_data_dir(data)
    count = info.counts["test"] if n is None else min(n, info.counts["test"])
    loader = DeviceLoader(info, "test", 1024, device, train=False, seed=0, indices=np.arange(count))
    batches = list(loader)
    return torch.cat([b.images for b in batches]), torch.cat([b.labels for b in batches]), info


def resolve_device(device=None) -> torch.device:
    """The asked-for device, or the GPU when there is one."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def evaluate_checkpoint(
    path,
    *,
    data=None,
    attacks=DEFAULT_ATTACKS,
    n=None,
    eps=None,
    source=None,
    checks=True,
    seed=0,
    batch_size=256,
    device=None,
    settings=STANDARD,
    log=print,
) -> dict:
    """One checkpoint's report: eps and data default to the checkpoint's training settings."""
    device = resolve_device(device)
    attacks = parse_attacks(attacks, bool(source))
    saved = load_checkpoint(path, map_location="cpu")
    eps = saved["config"]["eps"] if eps is None else eps
    data = data or saved["config"]["data"]
    if not 0 < eps <= 1:
        raise UsageError(f"--eps {eps} is out of range: it must lie in (0, 1]")
    if n is not None and n < 1:
        raise UsageError(f"--n {n} is out of range: evaluate at least one image")
    check_range("batch_size", batch_size, 1, 1_000_000)
    check_range("seed", seed, 0, SEED_MAX)
    images, labels, info = load_test_images(data, n, device)
    check_checkpoint_fits_data(saved, info, path)
    if data == saved["config"]["data"]:  # the data the checkpoint was trained on, unless --data named other data
        check_same_data(saved, info.checksums, path, data, "pass --data with the data it was trained on")
    source_state = None
    if source:  # transfer examples are crafted on these very images, so the source model must take them too
        source_state = load_checkpoint(source, map_location="cpu")
        check_checkpoint_fits_data(
            source_state, info, source, fix=f"pass a --source checkpoint trained on {info.dataset}"
        )
    log(
        f"evaluating {path} (epoch {saved.get('epoch', '?')}) on {len(labels)} {info.dataset} test images, "
        f"eps {eps * 255:.2f}/255, on {device}"
    )
    found = evaluate_model(
        model_from_state(saved, device),
        images,
        labels,
        eps=eps,
        num_classes=info.num_classes,
        attacks=attacks,
        settings=settings,
        seed=seed,
        batch_size=batch_size,
        source=model_from_state(source_state, device) if source else None,
        checks=checks,
        log=log,
    )
    report = {
        "format": REPORT_FORMAT,
        "checkpoint": os.path.abspath(path),
        "sha256": sha256(path),
        "epoch": saved.get("epoch"),
        "model": saved["model_spec"]["name"],
        "data": os.path.abspath(data),
        "dataset": info.dataset,
        "n": len(labels),
        "eps": eps,
        "seed": seed,
        "device": str(device),
        "settings": dataclasses.asdict(settings),
        **found,
    }
    if source:
        report["source"] = {"checkpoint": os.path.abspath(source), "sha256": sha256(source)}
    for name, r in report["attacks"].items():
        log(f"  {display_name(name):<12} {r['acc']:5.1f}%")
    return report


def best_final_table(best: dict, final: dict) -> str:
    """Markdown: each attack's accuracy at the best and the final checkpoint, and best - final (for AutoAttack's
    parts, the accuracy after each)."""
    lines = ["| attack | best | final | diff |", "|---|---|---|---|"]
    for name, b in best["attacks"].items():
        f = final["attacks"][name]
        rows = [(display_name(name), b["acc"], f["acc"])]
        rows += [
            (f"{display_name(name)} after {display_name(p)}", b["parts"][p]["acc"], f["parts"][p]["acc"])
            for p in b.get("parts", ())
        ]
        lines += [f"| {label} | {x:.1f} | {y:.1f} | {x - y:+.1f} |" for label, x, y in rows]
    return "\n".join(lines)


def run_eval(checkpoint, *, out=None, log=print, **options) -> dict:
    """`fastsglr eval`: a checkpoint, or a run directory (its best.pt and final.pt, with a best / final / diff
    table). ``options`` are those of ``evaluate_checkpoint``. Writes the report to ``out`` when given."""
    if out:  # a report is small, but one that cannot be written would throw the whole evaluation away
        check_free_space(os.path.dirname(os.path.abspath(out)), REPORT_BYTES, "the report")
        check_output_file(out, "report", REPORT_KEYS)
    if os.path.isdir(checkpoint):
        reports = {
            which: evaluate_checkpoint(os.path.join(checkpoint, f"{which}.pt"), log=log, **options)
            for which in ("best", "final")
        }
        report = {
            "run_dir": os.path.abspath(checkpoint),
            **reports,
            "table": best_final_table(reports["best"], reports["final"]),
        }
        log("\n" + report["table"])
    else:
        report = evaluate_checkpoint(checkpoint, log=log, **options)
    if out:
        write_json(out, report)
        log(f"wrote {out}")
    return report
