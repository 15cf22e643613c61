"""Multi-process training through torchrun, on CPU with the gloo backend, on digits.

Two ranks (global batch 64, 32 per rank) against one rank under torchrun with the same global batch (the same
samples in every step), through ``tests/ddp_probe.py``, which has every rank record its batches and its label table.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fastsglr.checkpoint import load_checkpoint
from fastsglr.data.datadir import read_data_dir
from fastsglr.data.loaders import read_labels

HERE = os.path.dirname(os.path.abspath(__file__))
TIMING = ("train_seconds", "eval_seconds", "epoch_seconds", "train_images_per_second")
EPOCHS = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(ranks, *args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *args]


def _train_args(data, out, *extra):
    return [
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
        str(EPOCHS),
        "--batch-size",
        "64",
        "--eval-subset",
        "200",
        "--device",
        "cpu",
        "--loader",
        "device",
        *extra,
    ]


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


@pytest.fixture(scope="module")
def runs(digits_dir, tmp_path_factory):
    """The same run with 2 ranks and with 1 rank under torchrun, each with its probe evidence."""
    root = tmp_path_factory.mktemp("ddp")
    out = {}
    for ranks in (2, 1):
        evidence, run = root / f"evidence{ranks}", str(root / f"run{ranks}")
        evidence.mkdir()
        subprocess.run(
            _torchrun(ranks, os.path.join(HERE, "ddp_probe.py"), str(evidence), *_train_args(digits_dir, run)),
            check=True,
            env=ENV,
            capture_output=True,
        )
        out[ranks] = (run, evidence)
    out["data"] = digits_dir
    return out


def test_each_rank_trains_on_its_own_shard_of_every_global_batch(runs):
    (_, two), (_, one) = runs[2], runs[1]
    ranks = [torch.load(two / f"order-rank{r}.pt") for r in (0, 1)]
    single = torch.load(one / "order-rank0.pt")
    for epoch in (0, 1):
        for r in (0, 1):  # the device loader re-implements FFCV's distributed order exactly
            assert ranks[r]["device"][epoch] == ranks[r]["ffcv"][epoch]
        steps = len(single["device"][epoch])
        assert steps == len(ranks[0]["device"][epoch]) == len(ranks[1]["device"][epoch]) == 1347 // 64
        seen = []
        for step in range(steps):
            a, b = ranks[0]["device"][epoch][step], ranks[1]["device"][epoch][step]
            assert len(a) == len(b) == 32
            assert sorted(a + b) == sorted(single["device"][epoch][step])  # the 1-rank batch of this step
            seen += a + b
        assert len(set(seen)) == len(seen)  # disjoint shards: no sample twice in an epoch
    assert ranks[0]["device"][0] != ranks[0]["device"][1]  # a new permutation every epoch


def test_label_table_is_identical_on_both_ranks_after_every_epoch(runs):
    run, evidence = runs[2]
    tables = [torch.load(evidence / f"tables-rank{r}.pt") for r in (0, 1)]
    assert len(tables[0]) == len(tables[1]) == EPOCHS
    onehot = torch.nn.functional.one_hot(read_labels(read_data_dir(runs["data"]), "train"), 10).float()
    previous = None
    for epoch in range(EPOCHS):
        (t0,), (t1,) = tables[0][epoch], tables[1][epoch]
        assert torch.equal(t0, t1), f"ranks disagree after epoch {epoch + 1}"
        # every row was refined by one rank or the other, not only the rows of rank 0's shard
        changed = (t0 != (onehot if previous is None else previous)).any(1)
        assert changed.float().mean() > 0.99
        previous = t0
    assert torch.equal(tables[0][-1][0], load_checkpoint(os.path.join(run, "final.pt"))["strategy"]["table"])


def test_two_ranks_match_one_rank_with_the_same_global_batch(runs):
    """Not bit-identical, by design: per-rank BatchNorm normalises each half-batch by its own statistics, and each
    rank draws its own attack starts. Stated tolerance, per epoch: training loss within 0.1, training accuracies
    within 6 points, test accuracies (200 images) within 10 points. Measured on this machine: at most 0.03, 2.5 and
    6."""
    two, one = _rows(runs[2][0]), _rows(runs[1][0])
    assert [r["ranks"] for r in two] == [2] * EPOCHS and [r["ranks"] for r in one] == [1] * EPOCHS
    for a, b in zip(two, one):
        assert a["lr"] == b["lr"]
        assert abs(a["train_loss"] - b["train_loss"]) < 0.1
        for key in ("train_adv_acc", "train_clean_acc"):
            assert abs(a[key] - b[key]) < 6, key
        for key in ("test_clean_acc", "test_pgd_acc"):
            assert abs(a[key] - b[key]) < 10, key
    assert two[-1]["train_loss"] < two[0]["train_loss"]


def test_sigterm_then_resume_matches_uninterrupted_and_any_rank_count_resumes(runs, tmp_path):
    whole = runs[2][0]
    start = time.perf_counter()
    out = str(tmp_path / "stopped")
    proc = subprocess.Popen(
        _torchrun(2, "-m", "fastsglr", *_train_args(runs["data"], out)),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("config:"):
            break
    time.sleep(np.random.default_rng().uniform(0.1, 1.5))  # fresh moments every run, usually mid-epoch
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert "last.pt holds it: fastsglr train --resume" in err
    stopped = load_checkpoint(os.path.join(out, "last.pt"))

    resumed = subprocess.run(
        _torchrun(2, "-m", "fastsglr", "train", "--resume", out), env=ENV, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _rows(out) == _rows(whole), f"stopped at epoch {stopped['epoch'] + 1} step {stopped['step']}"
    a, b = load_checkpoint(os.path.join(whole, "final.pt")), load_checkpoint(os.path.join(out, "final.pt"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["strategy"]["table"], b["strategy"]["table"])
    assert time.perf_counter() - start < 600


def test_a_two_rank_run_resumes_in_one_process(runs, tmp_path):
    """The run dir of a finished 2-rank run, cut back to epoch 2's last.pt, goes on in a plain single process."""
    import shutil

    out = str(tmp_path / "moved")
    shutil.copytree(runs[2][0], out)
    shutil.copy(os.path.join(out, "last.prev.pt"), os.path.join(out, "last.pt"))
    os.remove(os.path.join(out, "final.pt"))
    resumed = subprocess.run(
        [sys.executable, "-m", "fastsglr", "train", "--resume", out], env=ENV, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    assert [r["ranks"] for r in rows] == [2] * (EPOCHS - 1) + [1]


def test_fast_engine_under_torchrun_matches_the_reference(runs, tmp_path):
    """The fast engine under DDP: the module compiled inside DDP, the iteration eager (no fullgraph through DDP's
    forward, no capture), against the 2-rank reference run: the same samples and random numbers, so only compiled
    arithmetic differs. Stated tolerance per epoch: 0.02 on the loss, 3 points on the accuracies."""
    out = str(tmp_path / "fast")
    done = subprocess.run(
        _torchrun(2, "-m", "fastsglr", *_train_args(runs["data"], out, "--engine", "fast")),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for fast, reference in zip(_rows(out), _rows(runs[2][0]), strict=True):
        assert abs(fast["train_loss"] - reference["train_loss"]) < 0.02
        for key in ("train_adv_acc", "train_clean_acc"):
            assert abs(fast[key] - reference[key]) < 3, key


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_joined_by_c10d_rendezvous_match_the_single_node_run(runs, tmp_path):
    """Multi-node torchrun, as two machines would start it: two agents (here on this machine, each with one process)
    join through a c10d rendezvous on a TCP endpoint, then train like the 2-process single-node run. Each rank
    computes exactly what it computes there (the same shard, the same random numbers, the same gloo all-reduce of
    two ranks), so metrics, weights and the label table are equal, not merely close."""
    out = str(tmp_path / "two-nodes")
    rendezvous = [
        "--nnodes",
        "2",
        "--nproc_per_node",
        "1",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{_free_port()}",
        "--rdzv_id",
        f"fastsglr-{os.getpid()}",
    ]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rendezvous,
        "-m",
        "fastsglr",
        *_train_args(runs["data"], out),
    ]
    agents = [
        subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    for agent in agents:
        _, err = agent.communicate(timeout=300)
        assert agent.returncode == 0, err[-2000:]
    single_node = runs[2][0]
    assert [r["ranks"] for r in _rows(out)] == [2] * EPOCHS
    assert _rows(out) == _rows(single_node)
    a, b = load_checkpoint(os.path.join(single_node, "final.pt")), load_checkpoint(os.path.join(out, "final.pt"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["strategy"]["table"], b["strategy"]["table"])


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_nccl_sync_bn_fast_engine(digits_dir, tmp_path):
    """On a box with two GPUs (bench/gpu_suite.sh runs the gpu tests): NCCL, SyncBatchNorm and the fast engine in
    bf16 under torchrun, with the table identical on both ranks after every epoch."""
    evidence, out = tmp_path / "evidence", str(tmp_path / "run")
    evidence.mkdir()
    args = [a if a != "cpu" else "cuda" for a in _train_args(digits_dir, out, "--sync-bn", "--engine", "fast")]
    done = subprocess.run(
        _torchrun(2, os.path.join(HERE, "ddp_probe.py"), str(evidence), *args), env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tables = [torch.load(evidence / f"tables-rank{r}.pt") for r in (0, 1)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(*tables, strict=True))
    rows = _rows(out)
    assert [r["ranks"] for r in rows] == [2] * EPOCHS and rows[-1]["train_loss"] < rows[0]["train_loss"]
