"""`fastsglr eval` on a trained digits model: PGD-20 agrees with torchattacks, AutoAttack is at least as strong as
PGD-20, runs each part only on the images still robust and gets what its parts run alone get, the report holds what
it promises, `eval RUN_DIR` writes the best / final / diff table, and the gradient-masking checks pass an honest
model but flag one whose forward rounds its input."""

import hashlib
import json

import pytest
import torch
from torch import nn

import fastsglr.robustness as robustness
from fastsglr import load_model
from fastsglr.attacks import project
from fastsglr.cli import main
from fastsglr.errors import UsageError
from fastsglr.robustness import (
    ATTACKS,
    AUTOATTACK_PARTS,
    AttackSettings,
    eps_grid,
    evaluate_model,
    load_test_images,
    run_eval,
)

EPS = 32 / 255  # the demo preset's radius, which the runs below train with
# AutoAttack and Square shrunk so that a CPU runs them in seconds (the CLI uses the standard settings).
SMALL = AttackSettings(apgd_steps=20, fab_steps=20, square_queries=300, check_images=100)


def quiet(*_):
    pass


def _train(data, out, *flags):
    args = [
        "train",
        "--data",
        data,
        "--out",
        str(out),
        "--preset",
        "demo",
        "--eval-subset",
        "100",
        "--loader",
        "device",
        "--device",
        "cpu",
        *flags,
    ]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(digits_dir, tmp_path_factory):
    """PGD-AT with hard labels, 8 epochs: robust enough that the attacks have something to find."""
    return _train(digits_dir, tmp_path_factory.mktemp("eval") / "at", "--labels", "hard", "--epochs", "8")


@pytest.fixture(scope="module")
def source_dir(digits_dir, tmp_path_factory):
    """An independently trained model (other seed and labels): the transfer attack's source."""
    return _train(
        digits_dir, tmp_path_factory.mktemp("eval") / "source", "--labels", "sglr", "--epochs", "4", "--seed", "1"
    )


def _accuracy(model, images, labels):
    with torch.no_grad():
        return 100.0 * (model(images).argmax(1) == labels).double().mean().item()


def test_pgd20_agrees_with_torchattacks(run_dir, digits_dir):
    torchattacks = pytest.importorskip("torchattacks")
    report = run_eval(str(run_dir / "final.pt"), attacks="clean,pgd20", checks=False, device="cpu", log=quiet)
    assert report["n"] == 450 and report["eps"] == pytest.approx(EPS)  # defaults: all test images, the run's eps

    model = load_model(str(run_dir / "final.pt"))
    images, labels, _ = load_test_images(digits_dir, None, "cpu")
    torch.manual_seed(0)
    x_adv = torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=20, random_start=True)(images, labels)
    theirs = _accuracy(model, x_adv, labels)

    ours = report["attacks"]
    assert ours["clean"]["acc"] == pytest.approx(_accuracy(model, images, labels))
    assert ours["pgd20"]["acc"] < ours["clean"]["acc"] - 5
    assert abs(ours["pgd20"]["acc"] - theirs) <= 1.0, (ours["pgd20"]["acc"], theirs)


def _authors_pgd20(model, x, y, eps=0.031, step=0.003, steps=20):
    """devicerxx/SGLS pgd_attack.py's loop, re-written here: uniform start (not clipped to [0, 1]), sign step of the
    CE gradient, projection onto the eps-ball, then clipping to [0, 1]."""
    x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


def test_pgd20_sgls_is_the_authors_evaluator(run_dir, digits_dir):
    """At eps 8/255 it is pgd_attack.py's PGD-20 (eps 0.031, step 0.003); at the run's eps 32/255 radius and step are
    4 times those, and there (where the attack bites on digits) the accuracies agree with their loop's within 1.5
    points (random starts differ)."""
    path = str(run_dir / "final.pt")
    report = run_eval(path, attacks="pgd20-sgls", eps=8 / 255, n=8, checks=False, device="cpu", log=quiet)
    settings = report["attacks"]["pgd20-sgls"]["settings"]
    assert (settings["eps"], settings["step_size"], settings["steps"]) == (
        pytest.approx(0.031),
        pytest.approx(0.003),
        20,
    )

    scaled = run_eval(path, attacks="clean,pgd20-sgls", checks=False, device="cpu", log=quiet)
    settings = scaled["attacks"]["pgd20-sgls"]["settings"]
    assert settings["eps"] == pytest.approx(0.031 * 4) and settings["step_size"] == pytest.approx(0.003 * 4)
    model = load_model(path)
    images, labels, _ = load_test_images(digits_dir, None, "cpu")
    torch.manual_seed(0)
    theirs = _accuracy(model, _authors_pgd20(model, images, labels, eps=0.031 * 4, step=0.003 * 4), labels)
    ours = scaled["attacks"]["pgd20-sgls"]["acc"]
    assert ours < scaled["attacks"]["clean"]["acc"] - 5
    assert abs(ours - theirs) <= 1.5, (ours, theirs)


def test_autoattack_at_or_below_pgd20_and_report_holds_everything(run_dir, source_dir, tmp_path):
    path, source = run_dir / "final.pt", source_dir / "final.pt"
    out = tmp_path / "report.json"
    report = run_eval(str(path), attacks=ATTACKS, n=100, source=str(source), settings=SMALL, out=str(out), log=quiet)

    acc = {name: r["acc"] for name, r in report["attacks"].items()}
    aa = report["attacks"]["autoattack"]
    after = [p["acc"] for p in aa["parts"].values()]
    assert list(aa["parts"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert aa["acc"] <= acc["pgd20"]
    # Cumulative: each part runs on the images still robust after the ones before (APGD-CE on the clean-correct).
    assert after == sorted(after, reverse=True) and aa["acc"] == after[-1] and acc["cw"] <= acc["clean"]
    assert [p["images"] for p in aa["parts"].values()] == [round(a) for a in [acc["clean"], *after[:-1]]]  # n = 100
    assert aa["settings"]["apgd_steps"] == 20 and aa["settings"]["square_queries"] == 300
    assert aa["settings"]["targets"] == 9 and report["attacks"]["pgd20"]["settings"]["step_size"] == EPS / 4

    saved = json.loads(out.read_text())
    assert saved["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert saved["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert saved["seed"] == 0 and saved["n"] == 100 and saved["dataset"] == "digits"
    assert {name: r["acc"] for name, r in saved["attacks"].items()} == acc
    # An honest model raises no alarm: every check ran and passed, the black-box ones included.
    names = [c["name"] for c in saved["checks"]]
    assert len(names) == 6 and any("transfer" in n for n in names) and any("Square" in n for n in names)
    assert saved["checks_passed"], [c["message"] for c in saved["checks"] if not c["passed"]]


class RoundedInput(nn.Module):
    """Gradient masking by construction: the input is quantised to eighths, whose gradient is zero almost
    everywhere, so gradient attacks stall while a black-box search still finds adversarial examples."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 8) / 8)


class Scores(nn.Module):
    """A stand-in classifier: the logits are the first 10 pixels of a 1 x 1 x 11 image; pixel 10, which it ignores,
    holds the image's id / 100 so that a stub attack knows which image it is given."""

    def forward(self, x):
        return x.flatten(1)[:, :10]


def _scored_images(n, misclassified):
    """Image i shows class i % 10 (0.5) ahead of the next class (0.45): a step of 0.05 each way flips it."""
    shown = torch.arange(n) % 10
    images = torch.zeros(n, 1, 1, 11)
    images[torch.arange(n), 0, 0, shown] = 0.5
    images[torch.arange(n), 0, 0, (shown + 1) % 10] = 0.45
    images[:, 0, 0, 10] = torch.arange(n) / 100
    labels = shown.clone()
    labels[list(misclassified)] = (shown[list(misclassified)] + 5) % 10
    return images, labels


def test_autoattack_runs_each_part_on_survivors_only(monkeypatch):
    """Stub parts, each breaking a known set of images: each part sees exactly the images that the model classifies
    correctly and that no earlier part broke, and the report's per-part numbers follow."""
    breaks = {"apgd-ce": {2, 3, 4}, "apgd-t": {3, 5, 6}, "fab-t": {7}, "square": {8, 9, 3}}
    seen = {part: [] for part in AUTOATTACK_PARTS}

    def stub_part(part, *_):
        def attack(x, y):
            ids = torch.round(x[:, 0, 0, 10] * 100).long()
            seen[part] += ids.tolist()
            rows = torch.isin(ids, torch.tensor(sorted(breaks[part]))).nonzero().squeeze(1)
            x = x.clone()
            x[rows, 0, 0, y[rows]] -= 0.05
            x[rows, 0, 0, (y[rows] + 1) % 10] += 0.05
            return x

        return attack

    monkeypatch.setattr(robustness, "_torchattacks_part", stub_part)
    images, labels = _scored_images(20, misclassified={0, 1})
    report = evaluate_model(
        Scores(),
        images,
        labels,
        eps=0.1,
        num_classes=10,
        attacks="clean,autoattack",
        checks=False,
        batch_size=4,
        log=quiet,
    )

    robust = set(range(2, 20))
    for part in AUTOATTACK_PARTS:
        assert sorted(seen[part]) == sorted(robust), part
        assert report["attacks"]["autoattack"]["parts"][part]["images"] == len(robust)
        robust -= breaks[part]
        assert report["attacks"]["autoattack"]["parts"][part]["acc"] == 100.0 * len(robust) / 20
    assert robust == set(range(10, 20)) and report["attacks"]["autoattack"]["acc"] == 50.0


def test_autoattack_equals_its_parts_run_alone(run_dir, digits_dir):
    """On the trained model, each part run alone by torchattacks on every image: the per-image AND over the parts is
    AutoAttack's result. With one image per batch each image's attack is the same wherever it runs (torchattacks
    reseeds at every call), so the two agree exactly."""
    ta = pytest.importorskip("torchattacks")
    settings = AttackSettings(apgd_steps=10, fab_steps=10, square_queries=100)
    model = load_model(str(run_dir / "final.pt"))
    images, labels, _ = load_test_images(digits_dir, 20, "cpu")
    aa = evaluate_model(
        model,
        images,
        labels,
        eps=EPS,
        num_classes=10,
        attacks="autoattack",
        settings=settings,
        checks=False,
        batch_size=1,
        log=quiet,
    )["attacks"]["autoattack"]

    common = dict(norm="Linf", eps=EPS, n_restarts=1, seed=0)
    alone = {
        "apgd-ce": ta.APGD(model, steps=10, loss="ce", **common),
        "apgd-t": ta.APGDT(model, steps=10, n_classes=10, **common),
        "fab-t": ta.FAB(model, steps=10, multi_targeted=True, n_classes=10, **common),
        "square": ta.Square(model, n_queries=100, **common),
    }
    with torch.no_grad():
        robust = model(images).argmax(1) == labels
    for part, attack in alone.items():
        x_adv = torch.cat([project(attack(x[None], y[None]), x[None], EPS) for x, y in zip(images, labels)])
        assert aa["parts"][part]["images"] == robust.sum().item()
        with torch.no_grad():
            robust &= model(x_adv).argmax(1) == labels
        assert aa["parts"][part]["acc"] == pytest.approx(100.0 * robust.double().mean().item())
    assert aa["acc"] == pytest.approx(100.0 * robust.double().mean().item())
    assert aa["parts"]["square"]["images"] < aa["parts"]["apgd-ce"]["images"]  # not vacuous: earlier parts broke some


def test_checks_flag_a_gradient_masked_model(run_dir, digits_dir, capsys):
    images, labels, _ = load_test_images(digits_dir, 100, "cpu")
    honest = load_model(str(run_dir / "final.pt"))
    kwargs = dict(eps=EPS, num_classes=10, settings=SMALL)

    # (the honest model passes the AutoAttack check too: test_autoattack_at_or_below_pgd20_and_report_holds_everything)
    assert evaluate_model(honest, images, labels, attacks="clean,pgd20,square", **kwargs)["checks_passed"]
    assert "gradient masking" not in capsys.readouterr().out

    report = evaluate_model(RoundedInput(honest), images, labels, attacks="clean,pgd20,square,autoattack", **kwargs)
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    # Square alone beats white-box; within AutoAttack it breaks images on which APGD, FAB-T and PGD-20 all failed.
    assert {
        "Square (black-box) is not below white-box",
        "AutoAttack: Square (black-box) breaks no image white-box failed on",
    } <= failed
    assert not report["checks_passed"]
    assert "WARNING: possible gradient masking" in capsys.readouterr().out


def test_eval_run_dir_writes_best_final_table(run_dir, tmp_path):
    out = tmp_path / "run.json"
    report = run_eval(str(run_dir), attacks="clean,pgd20", n=64, checks=False, out=str(out), log=quiet)
    assert report["best"]["checkpoint"].endswith("best.pt") and report["final"]["checkpoint"].endswith("final.pt")
    best_epoch = json.loads((run_dir / "summary.json").read_text())["best_epoch"]
    assert report["best"]["epoch"] == best_epoch and report["final"]["epoch"] == 8
    rows = [line for line in report["table"].splitlines() if line.startswith("| natural") or line.startswith("| PGD")]
    for line, name in zip(rows, ("clean", "pgd20")):
        b, f = report["best"]["attacks"][name]["acc"], report["final"]["attacks"][name]["acc"]
        assert line.split("|")[2:5] == [f" {b:.1f} ", f" {f:.1f} ", f" {b - f:+.1f} "]
    assert json.loads(out.read_text())["table"] == report["table"]


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(attacks="clean,pgd0"), "unknown attack 'pgd0'"),
        (dict(attacks="fgsm"), "unknown attack 'fgsm'"),
        (dict(attacks="transfer"), "needs --source"),
        (dict(n=0), "--n 0 is out of range"),
        (dict(eps=2.0), "--eps 2.0 is out of range"),
    ],
)
def test_bad_requests_are_one_line_usage_errors(run_dir, options, message):
    with pytest.raises(UsageError, match=message) as info:
        run_eval(str(run_dir / "final.pt"), checks=False, log=quiet, **options)
    assert "\n" not in str(info.value)


def test_transfer_attacks_craft_on_the_source_and_count_as_black_box(monkeypatch):
    """transfer (PGD-transfer_steps), transfer-pgd10 and transfer-cw run their white-box attack on the source and
    are scored on the model: each accuracy is the model's on the source's examples, recomputed here. Only the sanity
    checks attack the model itself, and each transfer attack gets the black-box check."""
    torch.manual_seed(0)
    model, source = (nn.Sequential(nn.Flatten(), nn.Linear(64, 10)) for _ in range(2))
    images, labels = torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,))
    settings = AttackSettings(cw_steps=7, transfer_steps=5, check_images=40)
    calls = []
    real_pgd = robustness.pgd

    def spy(attacked, x, y, **kwargs):
        calls.append((attacked, kwargs["steps"], kwargs["loss"]))
        return real_pgd(attacked, x, y, **kwargs)

    monkeypatch.setattr(robustness, "pgd", spy)
    report = evaluate_model(
        model,
        images,
        labels,
        eps=EPS,
        num_classes=10,
        settings=settings,
        source=source,
        attacks="transfer,transfer-pgd10,transfer-cw",
        log=quiet,
    )

    crafting = {"transfer": (5, "ce"), "transfer-pgd10": (10, "ce"), "transfer-cw": (7, "cw")}
    assert [(steps, loss) for m, steps, loss in calls if m is source] == list(crafting.values())
    assert all(steps in (1, 20) and loss == "ce" for m, steps, loss in calls if m is model)  # the checks
    for name, (steps, loss) in crafting.items():
        torch.manual_seed(0)  # as evaluate_model seeds each attack
        x_adv = project(
            real_pgd(source, images, labels, eps=EPS, step_size=EPS / 4, steps=steps, loss=loss), images, EPS
        )
        assert report["attacks"][name]["acc"] == pytest.approx(_accuracy(model, x_adv, labels))
        assert report["attacks"][name]["settings"] == {
            "eps": EPS,
            "steps": steps,
            "step_size": EPS / 4,
            "loss": loss,
            "random_start": True,
            "crafted_on": "source",
        }
    black_box = [c["name"] for c in report["checks"] if "black-box" in c["name"]]
    assert black_box == [
        f"{n} (black-box) is not below white-box" for n in ("transfer", "transfer PGD-10", "transfer CW-inf")
    ]


@pytest.mark.parametrize(
    "attacks,message",
    [
        ("transfer-pgd0", "unknown attack 'transfer-pgd0'"),
        ("transfer-square", "unknown attack 'transfer-square'"),
        ("transfer-cw", "needs --source"),
        ("clean,transfer-pgd10", "needs --source"),
    ],
)
def test_bad_transfer_attacks(attacks, message):
    with pytest.raises(UsageError, match=message):
        robustness.parse_attacks(attacks, has_source=False)


def test_eps_grid_reaches_mid_grey():
    assert eps_grid(8 / 255) == pytest.approx([0, 4 / 255, 8 / 255, 16 / 255, 32 / 255, 0.5], abs=1e-6)
    assert eps_grid(32 / 255) == pytest.approx([0, 16 / 255, 32 / 255, 64 / 255, 0.5], abs=1e-6)
