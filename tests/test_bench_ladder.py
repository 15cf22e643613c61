"""bench/epochs_per_hour.py --quick on a CPU, run as `fastsglr bench --quick`: the headline rung is measured first,
the reference twice (PyTorch's default and strict fp32) with both speed-ups, the rungs that need CUDA say so, a whole
`fastsglr train` epoch is timed end to end, and the JSON, markdown and bar chart are written; a later `--only` part
adds to the same JSON."""

import json
import os
import subprocess
import sys

import pytest

RUNGS = [
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
    tf32, strict = rows[RUNGS[0]], rows[RUNGS[1]]
    assert not tf32["strict_fp32"] and strict["strict_fp32"]
    for name in RUNGS[:5]:
        row = rows[name]
        assert row["status"] == "ok", row
        assert row["seconds_per_epoch"] > 0 and row["epochs_per_hour"] == 3600 / row["seconds_per_epoch"]
        assert row["speedup_vs_tf32"] == tf32["seconds_per_iteration"] / row["seconds_per_iteration"]
        assert row["speedup_vs_strict_fp32"] == strict["seconds_per_iteration"] / row["seconds_per_iteration"]
        assert 0 < row["mfu"] and row["warmup_seconds"] > 0
        compiled = name == HEADLINE
        assert (row["compile_capture_seconds"] is not None) == compiled and (row["one_graph"] is not None) == compiled
    assert rows[HEADLINE]["headline"] and rows[HEADLINE]["compile_capture_seconds"] >= 0
    assert tf32["speedup_vs_tf32"] == 1.0 and strict["speedup_vs_strict_fp32"] == 1.0
    assert all(rows[name]["status"].startswith("skipped: needs CUDA") for name in RUNGS[5:])

    e2e = result["end_to_end"]  # two epochs of `fastsglr train` with the CPU's defaults on 256 / 64 synthetic images
    assert e2e["status"] == "ok" and (e2e["train_images"], e2e["test_images"]) == (256, 64)
    assert (e2e["engine"], e2e["precision"], e2e["loader"], e2e["eval_steps"]) == ("reference", "fp32", "device", 20)
    assert e2e["epochs_per_hour"] == 3600 / e2e["epoch_seconds"] and e2e["first_epoch_seconds"] > 0
    assert e2e["train_seconds"] > 0 and e2e["eval_seconds"] > 0 and e2e["other_seconds"] >= 0
    assert e2e["train_seconds"] + e2e["eval_seconds"] + e2e["other_seconds"] == pytest.approx(e2e["epoch_seconds"])

    loaders = {row["loader"]: row for row in result["loaders"]}
    assert loaders["gpu-resident"]["images_per_second"] > 0 and loaders["gpu-resident"]["vs_engine"] > 0
    assert loaders["ffcv"]["status"] == "ok" or loaders["ffcv"]["status"].startswith("skipped: ffcv is not installed")
    table = out.with_suffix(".md").read_text()
    assert (
        f"| **{HEADLINE}** |" in table and "measure nothing else" in table and "TF32 does not exist on a CPU" in table
    )
    assert "## A whole `fastsglr train` epoch" in table
    assert out.with_suffix(".png").stat().st_size > 0

    # gpu_suite.sh runs the parts as stages into one file: a later part keeps what the earlier ones measured.
    _bench(tmp_path, "--only", "end-to-end", "--out", str(out))
    again = json.loads(out.read_text())
    assert again["models"] == result["models"] and again["end_to_end"]["status"] == "ok"
    assert again["end_to_end"]["epoch_seconds"] != e2e["epoch_seconds"]  # measured anew
