"""A machine where `import ffcv` fails (the GPU box): prepare (digits, synthetic, CIFAR) writes the arrays only and
says so, train picks the device-held loader by default, a run resumes to the same end (also one started with FFCV,
given --loader device), eval works, and asking for the FFCV loader is a one-line error. Every command goes through
the command line in a fresh interpreter whose `import ffcv` is made to fail before fastsglr is imported."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

from fastsglr.checkpoint import load_checkpoint

# A None in sys.modules makes `import ffcv` (and `from ffcv.x import y`) raise ImportError, as where it is missing.
DRIVER = """
import json, sys
sys.modules["ffcv"] = None
from fastsglr.cli import main
print("exit codes:", json.dumps([main(argv) for argv in json.loads(sys.argv[1])]))
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TIMING = ("train_seconds", "eval_seconds", "epoch_seconds", "train_images_per_second")
QUICK = ["--preset", "demo", "--attack-steps", "1", "--eval-subset", "50", "--device", "cpu"]


def _cli_without_ffcv(*commands):
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(commands)], capture_output=True, text=True, env=ENV, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    codes = json.loads(done.stdout.rsplit("exit codes:", 1)[1])
    return codes, done.stdout, done.stderr


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def test_prepare_train_resume_eval_without_ffcv(tmp_path):
    from fake_cifar import _write_cifar10

    _write_cifar10(tmp_path / "raw", np.random.default_rng(0))
    digits, synth, cifar = (str(tmp_path / name) for name in ("digits", "synth", "cifar"))
    whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
    codes, out, err = _cli_without_ffcv(
        ["prepare", "--dataset", "digits", "--out", digits],
        ["prepare", "--dataset", "synthetic", "--out", synth, "--synthetic-train", "96", "--synthetic-test", "32"],
        ["prepare", "--dataset", "cifar10", "--root", str(tmp_path / "raw"), "--out", cifar],
        ["train", "--data", digits, "--out", whole, "--epochs", "2", *QUICK],
        ["train", "--data", synth, "--out", str(tmp_path / "synth_run"), "--epochs", "1", "--batch-size", "32", *QUICK],
        [
            "eval",
            os.path.join(whole, "final.pt"),
            "--attacks",
            "clean,pgd20",
            "--n",
            "50",
            "--no-checks",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "report.json"),
        ],
        ["train", "--data", digits, "--out", str(tmp_path / "refused"), "--loader", "ffcv", *QUICK],
    )
    assert codes == [0, 0, 0, 0, 0, 0, 2], out + err
    assert out.count("FFCV is not installed: wrote the arrays only, no betons") == 3
    for data in (digits, synth, cifar):
        assert sorted(os.listdir(data)) == ["meta.json", "test.npz", "train.npz"]
    assert err.strip().splitlines()[-1] == (
        "fastsglr: error: --loader ffcv needs FFCV, which cannot be imported here: use --loader device (the data "
        "set held on the device), or install FFCV (pip install 'fastsglr[ffcv]')"
    )
    assert not os.path.exists(tmp_path / "refused")
    for run in (whole, str(tmp_path / "synth_run")):
        assert json.load(open(os.path.join(run, "config.json")))["loader"] == "device"  # the default there
    report = json.load(open(tmp_path / "report.json"))
    assert 0 <= report["attacks"]["pgd20"]["acc"] <= report["attacks"]["clean"]["acc"] <= 100

    # A run killed after its first epoch: last.pt then was what last.prev.pt is now. `moved` was started where FFCV
    # is installed (its config says so) and goes on here with the device-held loader.
    moved = str(tmp_path / "moved")
    for run in (resumed, moved):
        shutil.copytree(whole, run)
        os.replace(os.path.join(run, "last.prev.pt"), os.path.join(run, "last.pt"))
        for name in ("final.pt", "summary.json", "curves.png"):
            os.remove(os.path.join(run, name))
    config = json.load(open(os.path.join(moved, "config.json")))
    json.dump({**config, "loader": "ffcv"}, open(os.path.join(moved, "config.json"), "w"))
    codes, out, err = _cli_without_ffcv(
        ["train", "--resume", resumed], ["train", "--resume", moved], ["train", "--resume", moved, "--loader", "device"]
    )
    assert codes == [0, 2, 0], out + err
    assert "fastsglr: error: --loader ffcv needs FFCV, which cannot be imported here: use --loader device" in err
    a = load_checkpoint(os.path.join(whole, "final.pt"))
    for run in (resumed, moved):
        b = load_checkpoint(os.path.join(run, "final.pt"))
        assert a["model"].keys() == b["model"].keys()
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert torch.equal(a["strategy"]["table"], b["strategy"]["table"])
        assert _rows(whole) == _rows(run)
