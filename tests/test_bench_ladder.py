"""bench/epochs_per_hour.py --quick on a CPU, run as `fastsglr bench --quick`: the headline rung is measured first,
the conventional loop and the reference twice (PyTorch's default and strict fp32) with the speed-ups over all three,
the rungs that need CUDA say so, a whole `fastsglr train` epoch is timed end to end beside a whole epoch of the
conventional loop with the speed-up of the one over the other, and the JSON, markdown and bar chart are written; a
later `--only` part adds to the same JSON."""

import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

CONVENTIONAL = "conventional loop (DataLoader, PIL, eager fp32)"
RUNGS = [
    CONVENTIONAL,
    "reference eager fp32 (TF32 convolutions)",
    "reference eager strict fp32",
    "+bf16 autocast",
    "+channels-last",
    "+torch.compile",
    "+fused kernels",
    "+CUDA graph",
]
HEADLINE = "+torch.compile"  # the top rung a CPU runs


def _bench(tmp_path, *args):
    # The eager rungs must run the fused ops' CPU path, not the Triton interpreter another test module may turn on.
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "fastsglr", "bench", "--quick", "--device", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_epochs_per_hour_quick(tmp_path):
    out = tmp_path / "ladder.json"
    stdout = _bench(tmp_path, "--out", str(out))
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu" and result["bf16_peak_tflops"] > 0
    entry = result["models"]["smallcnn"]
    # PGD-2 + SGLR: 2 x (forward + input gradient) + forward and full backward + clean forward = 8 forwards' worth.
    assert 7 < entry["forward_equivalents_per_image"] < 9
    rows = {row["rung"]: row for row in entry["rungs"]}
    assert list(rows) == RUNGS
    measured = [line.split()[1:] for line in stdout.splitlines() if line.startswith("smallcnn ")]
    assert " ".join(measured[0]).startswith(HEADLINE + " "), "the headline is measured first"
    conventional, tf32, strict = rows[CONVENTIONAL], rows[RUNGS[1]], rows[RUNGS[2]]
    assert not tf32["strict_fp32"] and strict["strict_fp32"]
    for name in RUNGS[:6]:
        row = rows[name]
        assert row["status"] == "ok", row
        assert row["seconds_per_epoch"] > 0 and row["epochs_per_hour"] == 3600 / row["seconds_per_epoch"]
        assert row["speedup_vs_conventional"] == conventional["seconds_per_iteration"] / row["seconds_per_iteration"]
        assert row["speedup_vs_tf32"] == tf32["seconds_per_iteration"] / row["seconds_per_iteration"]
        assert row["speedup_vs_strict_fp32"] == strict["seconds_per_iteration"] / row["seconds_per_iteration"]
        assert 0 < row["mfu"] and row["warmup_seconds"] > 0
        compiled = name == HEADLINE
        assert (row["compile_capture_seconds"] is not None) == compiled and (row["one_graph"] is not None) == compiled
    assert rows[HEADLINE]["headline"] and rows[HEADLINE]["compile_capture_seconds"] >= 0
    assert tf32["speedup_vs_tf32"] == 1.0 and strict["speedup_vs_strict_fp32"] == 1.0
    assert conventional["speedup_vs_conventional"] == 1.0 and conventional["options"] is None
    assert all(rows[name]["status"].startswith("skipped: needs CUDA") for name in RUNGS[6:])

    e2e = result["end_to_end"]  # two epochs of `fastsglr train` with the CPU's defaults on 256 / 64 synthetic images
    assert e2e["status"] == "ok" and (e2e["train_images"], e2e["test_images"]) == (256, 64)
    assert (e2e["engine"], e2e["precision"], e2e["loader"], e2e["eval_steps"]) == ("reference", "fp32", "device", 20)
    assert e2e["epochs_per_hour"] == 3600 / e2e["epoch_seconds"] and e2e["first_epoch_seconds"] > 0
    assert e2e["train_seconds"] > 0 and e2e["eval_seconds"] > 0 and e2e["other_seconds"] >= 0
    assert e2e["train_seconds"] + e2e["eval_seconds"] + e2e["other_seconds"] == pytest.approx(e2e["epoch_seconds"])

    # A whole epoch of the conventional loop on the same data, beside it: --quick times it whole, none extrapolated.
    loop = result["conventional"]
    assert loop["status"] == "ok" and (loop["train_images"], loop["test_images"]) == (256, 64)
    assert (loop["model"], loop["workers"], loop["test_batch_size"], loop["eval_steps"]) == ("smallcnn", 4, 128, 20)
    assert (loop["train_batches_timed"], loop["test_batches_timed"], loop["extrapolated"]) == (8, 1, False)
    assert loop["train_seconds"] > 0 and loop["eval_seconds"] > 0 and loop["checkpoint_seconds"] > 0
    assert loop["epoch_seconds"] == loop["train_seconds"] + loop["eval_seconds"] + loop["checkpoint_seconds"]
    ratio = e2e["speedup_vs_conventional"]
    assert math.isfinite(ratio) and ratio == loop["epoch_seconds"] / e2e["epoch_seconds"]
    assert f"`fastsglr train` end to end: {ratio:.2f}x the conventional loop's epochs per hour" in stdout

    loaders = {row["loader"]: row for row in result["loaders"]}
    assert loaders["gpu-resident"]["images_per_second"] > 0 and loaders["gpu-resident"]["vs_engine"] > 0
    assert loaders["ffcv"]["status"] == "ok" or loaders["ffcv"]["status"].startswith("skipped: ffcv is not installed")
    table = out.with_suffix(".md").read_text()
    assert (
        f"| **{HEADLINE}** |" in table and "measure this CPU only" in table and "TF32 does not exist on a CPU" in table
    )
    assert "## A whole `fastsglr train` epoch" in table
    assert f"**`fastsglr train` end to end: {ratio:.2f}x the conventional loop's epochs per hour**" in table
    assert f"| {CONVENTIONAL} | {conventional['seconds_per_epoch']:.2f} | " in table
    assert out.with_suffix(".png").stat().st_size > 0

    # gpu_suite.sh runs the parts as stages into one file: a later part keeps what the earlier ones measured.
    # Here the conventional epoch is timed over 2 of its 8 training batches (its 1 test batch is all there is).
    _bench(tmp_path, "--only", "end-to-end", "--conventional-batches", "2", "--out", str(out))
    again = json.loads(out.read_text())
    assert again["models"] == result["models"] and again["end_to_end"]["status"] == "ok"
    assert again["end_to_end"]["epoch_seconds"] != e2e["epoch_seconds"]  # measured anew
    loop = again["conventional"]
    assert loop["status"] == "ok" and (loop["train_batches_timed"], loop["test_batches_timed"]) == (2, 1)
    assert loop["extrapolated"] and math.isfinite(again["end_to_end"]["speedup_vs_conventional"])


def test_conventional_epoch_extrapolation():
    """A pass timed whole is its own measurement (a partial last batch included); one timed over its first batches
    counts the first (worker start-up included) as measured and the others at the pace measured after it."""
    extrapolated = runpy.run_path(str(Path(__file__).resolve().parents[1] / "bench" / "epochs_per_hour.py"))[
        "extrapolated_seconds"
    ]
    assert extrapolated([0.0, 1.0, 3.0, 6.0], 3) == 6.0
    assert extrapolated([0.0, 1.0, 3.0, 6.0], 2.5) == 6.0  # 3 batches, the last one half full
    assert extrapolated([0.0, 2.0, 3.0, 4.0], 10) == 2.0 + 9 * 1.0
    assert extrapolated([0.0, 2.0, 3.5, 4.0], 390.625) == pytest.approx(2.0 + 389.625 * 1.0)
    assert extrapolated([0.0, 2.0], 4.5) == 9.0
