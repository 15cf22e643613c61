"""A run's TensorBoard events, read back with TensorBoard's own EventAccumulator, equal its metrics.jsonl scalar by
scalar (float32, TensorBoard's precision): after a run, after a resume that finds epochs missing from the events,
and after a resume from an earlier epoch than the events reach (the START marker drops the later points)."""

import dataclasses
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fastsglr.checkpoint import resume_config
from fastsglr.config import Config, apply_preset, validate
from fastsglr.tensorboard_events import EVENTS_GLOB, EventLog, scalars, tag
from fastsglr.trainer import read_history, train

SKIPPED = ("epoch",)  # the step


def _events(run_dir) -> dict:
    """tag -> [(step, value)] as TensorBoard reads the run directory."""
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def _expected(history) -> dict:
    """tag -> [(epoch, float32 value)] of every numeric metrics.jsonl column, built here from the rows."""
    expected = {}
    for row in history:
        for key, value in row.items():
            if key in SKIPPED or value is None or isinstance(value, bool):
                continue
            assert isinstance(value, (int, float)), key
            expected.setdefault(tag(key), []).append((row["epoch"], float(np.float32(value))))
    return expected


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tb") / "run")
    cfg = apply_preset(Config(data=digits_dir, out=out, device="cpu"), "standin")
    train(validate(dataclasses.replace(cfg, epochs=2, eval_subset=64, loader="device")), log=lambda *_: None)
    return out


def test_events_equal_metrics_scalar_by_scalar(trained):
    history = read_history(trained)
    expected = _expected(history)
    assert {"train/loss", "train/adv_acc", "test/pgd_acc", "test/clean_acc", "run/lr", "run/grad_norm"} <= set(expected)
    assert "run/eval_seconds" in expected and "test/ece_adv" in expected
    assert _events(trained) == expected
    assert len(glob.glob(os.path.join(trained, EVENTS_GLOB))) == 1


def test_a_resume_writes_the_epochs_the_events_lack(trained, tmp_path):
    """As if stopped between last.pt and the events: the events are gone, the run resumes after its last epoch."""
    run = str(tmp_path / "run")
    shutil.copytree(trained, run)
    for name in ("final.pt", "summary.json", *map(os.path.basename, glob.glob(os.path.join(run, EVENTS_GLOB)))):
        os.remove(os.path.join(run, name))
    train(validate(dataclasses.replace(resume_config(run), out=run)), resume=True, log=lambda *_: None)
    assert _events(run) == _expected(read_history(run))


def test_events_ahead_of_a_resumed_history_are_dropped(tmp_path):
    rng = np.random.default_rng()
    rows = [
        {"epoch": e, "lr": float(rng.uniform()), "train_loss": float(rng.normal()), "test_pgd_acc": None}
        for e in (1, 2, 3)
    ]
    first = EventLog(str(tmp_path), rows)  # epochs 1-3 written
    first.close()
    again = [{**r, "train_loss": float(rng.normal())} for r in rows[:1]]  # resumed at epoch 1 (last.prev.pt)
    second = EventLog(str(tmp_path), again)
    second.add({"epoch": 2, "lr": 0.5, "train_loss": 0.25, "test_pgd_acc": 40.0})
    second.close()
    # epoch 1 as first written (the resume kept it), epoch 2 anew, epoch 3 dropped
    assert _events(str(tmp_path)) == {
        "run/lr": [(1, float(np.float32(rows[0]["lr"]))), (2, 0.5)],
        "train/loss": [(1, float(np.float32(rows[0]["train_loss"]))), (2, 0.25)],
        "test/pgd_acc": [(2, 40.0)],
    }
    row = {"epoch": 4, "swa_averaged": True, "ranks": 1, "test_pgd_acc": None, "train_adv_memorized_corrupted": np.nan}
    assert scalars(row) == {"run/ranks": 1.0}


# A box that only trains (the GPU box): `import` of these fails, as where they are not installed.
BARE = """
import sys
for name in ("matplotlib", "tensorboard", "submitit"):
    sys.modules[name] = None
from fastsglr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_box_without_tensorboard_trains_and_says_so(digits_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", digits_dir, "--out", str(out), "--preset", "demo", "--epochs", "1", "--device", "cpu"]
    done = subprocess.run(
        [sys.executable, "-c", BARE, *args, "--attack-steps", "1", "--eval-subset", "32", "--loader", "device"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "tensorboard is not installed: no TensorBoard events (pip install tensorboard)" in done.stdout
    assert os.path.isfile(out / "final.pt") and not glob.glob(str(out / EVENTS_GLOB))
