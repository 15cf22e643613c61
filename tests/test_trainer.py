"""The reference trainer end to end on digits: what a run leaves behind, exact resume, atomic checkpoints, NaN stop,
PGD-20 agreeing with torchattacks, and the command line's errors."""

import json
import os

import pytest
import torch

import fastsglr
import fastsglr.engine.iteration as iteration
import fastsglr.evaluation as evaluation
import fastsglr.trainer as trainer
from fastsglr.checkpoint import load_checkpoint, save_checkpoint
from fastsglr.cli import main
from fastsglr.data.datadir import read_data_dir
from fastsglr.data.loaders import DeviceLoader
from fastsglr.metrics import TEST_COLUMNS

TIMING = ("train_seconds", "eval_seconds", "epoch_seconds", "train_images_per_second")


def _train(data, out, *extra):
    args = [
        "train",
        "--data",
        data,
        "--out",
        str(out),
        "--preset",
        "demo",
        "--epochs",
        "3",
        "--eval-subset",
        "120",
        "--device",
        "cpu",
        *extra,
    ]
    return main(args)


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def test_run_leaves_everything_behind(digits_dir, tmp_path):
    out = tmp_path / "run"
    assert _train(digits_dir, out, "--labels", "sglr") == 0
    for f in trainer.RUN_FILES:
        assert (out / f).is_file(), f
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["train_adv_acc"] > 20 and rows[-1]["test_clean_acc"] > rows[-1]["test_pgd_acc"]
    summary = json.load(open(out / "summary.json"))
    best = max(rows, key=lambda r: r["test_pgd_acc"])
    assert summary["test_pgd_acc"]["best"] == best["test_pgd_acc"]
    assert summary["test_pgd_acc"]["final"] == rows[-1]["test_pgd_acc"]
    assert summary["test_pgd_acc"]["diff"] == pytest.approx(best["test_pgd_acc"] - rows[-1]["test_pgd_acc"])
    assert (summary["engine"], summary["precision"], summary["device"]) == ("reference", "fp32", "cpu")
    config = json.load(open(out / "config.json"))
    assert config["labels"] == "sglr" and config["preset"] == "demo" and config["epochs"] == 3
    model = fastsglr.load_model(str(out / "final.pt"))
    assert not model.training
    saved = load_checkpoint(str(out / "final.pt"))
    assert saved["strategy"]["table"].shape == (read_data_dir(digits_dir).counts["train"], 10)


def test_resume_after_interruption_matches_uninterrupted(digits_dir, tmp_path, monkeypatch):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _train(digits_dir, whole, "--labels", "sglr") == 0

    calls = {"n": 0}
    real_evaluate = evaluation.evaluate

    def evaluate_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # killed during the third epoch's evaluation: last.pt holds epoch 2
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", evaluate_then_die)
    assert _train(digits_dir, cut, "--labels", "sglr") == 130  # one line, no traceback
    monkeypatch.setattr(evaluation, "evaluate", real_evaluate)
    assert load_checkpoint(str(cut / "last.pt"))["epoch"] == 2
    assert main(["train", "--resume", str(cut)]) == 0

    assert _rows(cut) == _rows(whole)
    a, b = load_checkpoint(str(whole / "final.pt")), load_checkpoint(str(cut / "final.pt"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["strategy"]["table"], b["strategy"]["table"])


def test_eval_every_skips_epochs_but_never_the_last(digits_dir, tmp_path):
    """--eval-every 2 over 3 epochs evaluates epochs 2 and 3 only, with the numbers a run evaluating every epoch
    gets (evaluation does not touch training); epoch 1 has null test columns and cannot become best.pt."""
    every, sparse = tmp_path / "every", tmp_path / "sparse"
    assert _train(digits_dir, every, "--labels", "sglr", "--attack-steps", "1", "--loader", "device") == 0
    assert (
        _train(digits_dir, sparse, "--labels", "sglr", "--attack-steps", "1", "--loader", "device", "--eval-every", "2")
        == 0
    )
    a, b = _rows(every), _rows(sparse)
    assert [r["test_pgd_acc"] is None for r in b] == [True, False, False]
    assert all(b[0][key] is None for key in TEST_COLUMNS)
    assert '"test_pgd_acc": null' in (sparse / "metrics.jsonl").read_text().splitlines()[0]
    assert [{**rb, **{k: ra[k] for k in TEST_COLUMNS}} for ra, rb in zip(a, b)] == a
    assert b[1:] == a[1:]
    seconds = [json.loads(line)["eval_seconds"] for line in (sparse / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= seconds[0] < min(seconds[1:])
    best = max(a[1:], key=lambda r: (r["test_pgd_acc"], -r["epoch"]))
    assert load_checkpoint(str(sparse / "best.pt"))["epoch"] == best["epoch"]
    assert json.load(open(sparse / "summary.json"))["best_epoch"] == best["epoch"]


def test_crash_during_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    save_checkpoint(path, {"epoch": 1, "weights": torch.randn(50)})
    before = load_checkpoint(path)

    def torch_save_dies_halfway(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk died")

    monkeypatch.setattr(torch, "save", torch_save_dies_halfway)
    with pytest.raises(OSError):
        save_checkpoint(path, {"epoch": 2, "weights": torch.randn(50)})
    monkeypatch.undo()
    after = load_checkpoint(path)
    assert after["epoch"] == 1 and torch.equal(after["weights"], before["weights"])


def test_nonfinite_loss_stops_with_last_good_checkpoint(digits_dir, tmp_path, monkeypatch, capsys):
    real = iteration.objective_loss
    calls = {"n": 0}
    steps_per_epoch = read_data_dir(digits_dir).counts["train"] // 64

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, *rest = real(*args, **kwargs)  # (loss, logits_adv, logits_clean, awp_diff)
        if calls["n"] == steps_per_epoch + 5:  # epoch 2, step 5
            loss = loss * float("nan")
        return (loss, *rest)

    monkeypatch.setattr(iteration, "objective_loss", poisoned)
    out = tmp_path / "nan"
    assert _train(digits_dir, out, "--labels", "hard") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epoch 2, step 5" in err[0]
    saved = load_checkpoint(str(out / "last.pt"))
    assert saved["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point()
    )


@pytest.mark.parametrize("method,labels", [("pgd-at", "ls"), ("pgd-at", "te"), ("trades", "hard"), ("trades", "sglr")])
def test_every_method_trains(digits_dir, tmp_path, method, labels):
    out = tmp_path / f"{method}-{labels}"
    assert _train(digits_dir, out, "--method", method, "--labels", labels, "--epochs", "2") == 0
    rows = _rows(out)
    assert all(r["train_loss"] == r["train_loss"] for r in rows)  # finite
    assert rows[-1]["train_clean_acc"] > 15


def test_pgd20_matches_torchattacks(digits_dir, tmp_path):
    torchattacks = pytest.importorskip("torchattacks")
    out = tmp_path / "trained"
    assert _train(digits_dir, out, "--labels", "hard", "--epochs", "6") == 0
    model = fastsglr.load_model(str(out / "final.pt"))
    info = read_data_dir(digits_dir)
    eps = 32 / 255
    loader = DeviceLoader(info, "test", 450, "cpu", train=False, seed=0)
    torch.manual_seed(0)
    ours = evaluation.evaluate(model, loader, eps=eps, step_size=eps / 4, steps=20, device="cpu")
    attack = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True)
    # The same seed gives both the same random start (ours draws what torchattacks' uniform_ draws): only the
    # attacks' steps are compared, not two random starts (which alone move the accuracy by a point or two).
    torch.manual_seed(0)
    correct = total = 0
    for batch in loader:
        x_adv = attack(batch.images, batch.labels)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == batch.labels).sum().item()
        total += len(batch.labels)
    theirs = 100.0 * correct / total
    assert ours["test_pgd_acc"] < ours["test_clean_acc"] - 5
    assert abs(ours["test_pgd_acc"] - theirs) <= 1.0, (ours, theirs)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--r", "1.5"], "--r 1.5 is out of range"),
        (["--eps", "8/0"], "is not a number"),
        (["--model", "vgg"], "unknown model 'vgg'"),
        (["--device", "cuda"], "CUDA")
        if not torch.cuda.is_available()
        else (["--lr", "-1"], "--lr -1.0 is out of range"),
    ],
)
def test_bad_train_flags_exit_2_with_one_line(digits_dir, tmp_path, capsys, flags, message):
    assert main(["train", "--data", digits_dir, "--out", str(tmp_path / "x"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_existing_run_is_not_overwritten(digits_dir, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "last.pt").write_bytes(b"a checkpoint")  # config.json alone (a run stopped before any) is reused
    assert _train(digits_dir, out, "--epochs", "1") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "config.json").read_text() == "{}"


def test_missing_data_dir_exit_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run")]) == 2
    assert "fastsglr prepare" in capsys.readouterr().err
