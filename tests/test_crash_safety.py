"""Crash safety: checkpoints carry a checksum and a format version; a damaged last.pt falls back to the previous
good one; a run killed with SIGKILL at random moments resumes to the same result as a run never killed."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fastsglr.checkpoint import FORMAT_VERSION, load_checkpoint, load_resume_state, previous_path, save_checkpoint
from fastsglr.cli import main
from fastsglr.errors import UsageError

TIMING = ("train_seconds", "eval_seconds", "epoch_seconds", "train_images_per_second")


def test_damaged_checkpoints_are_named(tmp_path):
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, {"w": torch.randn(1000)})
    data = open(path, "rb").read()
    cases = {
        "truncated": data[:-100],
        "flipped": data[:-50] + bytes([data[-50] ^ 0xFF]) + data[-49:],
    }
    for name, damaged in cases.items():
        open(path, "wb").write(damaged)
        with pytest.raises(UsageError, match="corrupt or truncated"):
            load_checkpoint(path)
    torch.save({"w": 1}, path)  # a plain torch file: not ours
    with pytest.raises(UsageError, match="not a fastsglr checkpoint"):
        load_checkpoint(path)
    open(path, "wb").write(data.replace(b"CHECKPOINT %d " % FORMAT_VERSION, b"CHECKPOINT 9 ", 1))
    with pytest.raises(UsageError, match="has format 9"):
        load_checkpoint(path)


def test_resume_falls_back_to_previous_good_checkpoint(tmp_path):
    last = str(tmp_path / "last.pt")
    first, second = torch.randn(20), torch.randn(20)
    save_checkpoint(last, {"epoch": 1, "w": first}, keep_previous=True)
    save_checkpoint(last, {"epoch": 2, "w": second}, keep_previous=True)
    assert load_checkpoint(previous_path(last))["epoch"] == 1
    assert load_resume_state(str(tmp_path), log=lambda *_: None)["epoch"] == 2
    with open(last, "r+b") as f:  # damage last.pt after it was written
        f.seek(-10, os.SEEK_END)
        f.write(b"0123456789")
    warnings = []
    state = load_resume_state(str(tmp_path), log=warnings.append)
    assert state["epoch"] == 1 and torch.equal(state["w"], first)
    assert "corrupt" in warnings[0] and "last.prev.pt" in warnings[0]


def test_resume_with_conflicting_flag_is_refused(digits_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "--data", digits_dir, "--out", out, "--preset", "demo", "--epochs", "1", "--eval-subset", "50"]
    assert main(args) == 0
    assert main(["train", "--resume", out, "--epochs", "5"]) == 2
    assert "conflicts with the run being resumed" in capsys.readouterr().err


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def _command(data, out, *extra):
    return [
        sys.executable,
        "-m",
        "fastsglr",
        "train",
        "--data",
        data,
        "--out",
        out,
        "--preset",
        "demo",
        "--labels",
        "sglr",
        "--epochs",
        "3",
        "--eval-subset",
        "60",
        "--device",
        "cpu",
        "--loader",
        "device",
        *extra,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def whole_run(digits_dir, tmp_path_factory):
    """A run never interrupted, and how long it took."""
    whole = str(tmp_path_factory.mktemp("crash") / "whole")
    start = time.perf_counter()
    subprocess.run(_command(digits_dir, whole), check=True, env=ENV, capture_output=True)
    return whole, time.perf_counter() - start


def _assert_same_run(out, whole, context):
    assert _rows(out) == _rows(whole), context
    a, b = load_checkpoint(os.path.join(whole, "final.pt")), load_checkpoint(os.path.join(out, "final.pt"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), context
    assert torch.equal(a["strategy"]["table"], b["strategy"]["table"]), context


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_after_a_step_and_resume_exactly(digits_dir, whole_run, tmp_path, signum):
    whole, _ = whole_run
    out = str(tmp_path / "stopped")
    proc = subprocess.Popen(
        _command(digits_dir, out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in proc.stdout:  # the handlers are in place once the run prints its config
        if line.startswith("config:"):
            break
    time.sleep(np.random.default_rng().uniform(0.05, 2.0))  # fresh moments every run: mid-epoch or in evaluation
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run ended before the signal arrived")  # a machine far faster than this one
    assert proc.returncode == 128 + signum
    assert err.strip().splitlines()[-1].startswith("fastsglr: stopped after epoch") and "Traceback" not in err
    assert f"fastsglr train --resume {out}" in err
    stopped = load_checkpoint(os.path.join(out, "last.pt"))
    subprocess.run(
        [sys.executable, "-m", "fastsglr", "train", "--resume", out], check=True, env=ENV, capture_output=True
    )
    _assert_same_run(out, whole, f"stopped at epoch {stopped['epoch'] + 1}, step {stopped['step']}")


def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(digits_dir, whole_run, tmp_path):
    env = ENV
    whole, duration = whole_run

    rng = np.random.default_rng()  # fresh kill points every run
    for i, fraction in enumerate(rng.uniform(0.3, 0.95, size=3)):
        out = str(tmp_path / f"killed{i}")
        proc = subprocess.Popen(
            _command(digits_dir, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            proc.wait(timeout=fraction * duration)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        while not os.path.exists(os.path.join(out, "final.pt")):
            has_checkpoint = any(os.path.exists(os.path.join(out, f)) for f in ("last.pt", "last.prev.pt"))
            cmd = (
                [sys.executable, "-m", "fastsglr", "train", "--resume", out]
                if has_checkpoint
                else _command(digits_dir, out, "--overwrite")
            )
            subprocess.run(cmd, check=True, env=env, capture_output=True)
        _assert_same_run(out, whole, f"killed at {fraction:.2f} of the run")


# Epoch 2's last.pt is written in the background: its fsync hangs (after leaving a marker) until the run is killed.
FSYNC_HANGS = """
import os, sys, time
real, calls = os.fsync, []
def fsync(fd):
    if os.readlink(f"/proc/self/fd/{fd}").endswith("last.pt.tmp"):
        calls.append(fd)
        if len(calls) == 2:
            open(sys.argv[1], "w").close()
            time.sleep(3600)
    real(fd)
os.fsync = fsync
from fastsglr.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_during_a_background_checkpoint_write_keeps_the_previous_one(digits_dir, whole_run, tmp_path):
    whole, duration = whole_run
    out, marker = str(tmp_path / "killed"), tmp_path / "writing"
    proc = subprocess.Popen(
        [sys.executable, "-c", FSYNC_HANGS, str(marker), *_command(digits_dir, out)[3:]],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10 * duration + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert marker.exists(), "the run never reached epoch 2's checkpoint write"
    assert os.path.exists(os.path.join(out, "last.pt.tmp"))  # killed mid-write
    assert load_checkpoint(os.path.join(out, "last.pt"))["epoch"] == 1
    subprocess.run(
        [sys.executable, "-m", "fastsglr", "train", "--resume", out], check=True, env=ENV, capture_output=True
    )
    _assert_same_run(out, whole, "killed while epoch 2's last.pt was written in the background")
