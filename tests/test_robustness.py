"""`fastsglr eval` on a trained digits model: PGD-20 agrees with torchattacks, AutoAttack is at least as strong as
PGD-20, the report holds what it promises, `eval RUN_DIR` writes the best / final / diff table, and the
gradient-masking checks pass an honest model but flag one whose forward rounds its input."""
import hashlib
import json

import pytest
import torch
from torch import nn

from fastsglr import load_model
from fastsglr.cli import main
from fastsglr.errors import UsageError
from fastsglr.robustness import ATTACKS, AttackSettings, eps_grid, evaluate_model, load_test_images, run_eval

EPS = 32 / 255  # the demo preset's radius, which the runs below train with
# AutoAttack and Square shrunk so that a CPU runs them in seconds (the CLI uses the standard settings).
SMALL = AttackSettings(apgd_steps=20, fab_steps=20, square_queries=300, check_images=100)


def quiet(*_):
    pass


def _train(data, out, *flags):
    args = ["train", "--data", data, "--out", str(out), "--preset", "demo", "--eval-subset", "100",
            "--loader", "device", "--device", "cpu", *flags]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(digits_dir, tmp_path_factory):
    """PGD-AT with hard labels, 8 epochs: robust enough that the attacks have something to find."""
    return _train(digits_dir, tmp_path_factory.mktemp("eval") / "at", "--labels", "hard", "--epochs", "8")


@pytest.fixture(scope="module")
def source_dir(digits_dir, tmp_path_factory):
    """An independently trained model (other seed and labels): the transfer attack's source."""
    return _train(digits_dir, tmp_path_factory.mktemp("eval") / "source", "--labels", "sglr", "--epochs", "4",
                  "--seed", "1")


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


def test_autoattack_at_or_below_pgd20_and_report_holds_everything(run_dir, source_dir, tmp_path):
    path, source = run_dir / "final.pt", source_dir / "final.pt"
    out = tmp_path / "report.json"
    report = run_eval(str(path), attacks=ATTACKS, n=100, source=str(source), settings=SMALL, out=str(out), log=quiet)

    acc = {name: r["acc"] for name, r in report["attacks"].items()}
    aa = report["attacks"]["autoattack"]
    parts = {name: p["acc"] for name, p in aa["parts"].items()}
    assert set(parts) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    assert aa["acc"] <= acc["pgd20"]
    assert aa["acc"] <= min(parts.values())  # robust only if it survives every part
    assert max(parts.values()) <= acc["clean"] and acc["cw"] <= acc["clean"]
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


def test_checks_flag_a_gradient_masked_model(run_dir, digits_dir, capsys):
    images, labels, _ = load_test_images(digits_dir, 100, "cpu")
    honest = load_model(str(run_dir / "final.pt"))
    kwargs = dict(eps=EPS, num_classes=10, attacks="clean,pgd20,square", settings=SMALL)

    assert evaluate_model(honest, images, labels, **kwargs)["checks_passed"]
    assert "gradient masking" not in capsys.readouterr().out

    report = evaluate_model(RoundedInput(honest), images, labels, **kwargs)
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert "Square (black-box) is not below white-box" in failed
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


@pytest.mark.parametrize("options,message", [
    (dict(attacks="clean,pgd0"), "unknown attack 'pgd0'"),
    (dict(attacks="fgsm"), "unknown attack 'fgsm'"),
    (dict(attacks="transfer"), "needs --source"),
    (dict(n=0), "--n 0 is out of range"),
    (dict(eps=2.0), "--eps 2.0 is out of range"),
])
def test_bad_requests_are_one_line_usage_errors(run_dir, options, message):
    with pytest.raises(UsageError, match=message) as info:
        run_eval(str(run_dir / "final.pt"), checks=False, log=quiet, **options)
    assert "\n" not in str(info.value)


def test_eps_grid_reaches_mid_grey():
    assert eps_grid(8 / 255) == pytest.approx([0, 4 / 255, 8 / 255, 16 / 255, 32 / 255, 0.5], abs=1e-6)
    assert eps_grid(32 / 255) == pytest.approx([0, 16 / 255, 32 / 255, 64 / 255, 0.5], abs=1e-6)
