"""bench/epochs_per_hour.py --quick on a CPU, run as `fastsglr bench --quick`: the whole ladder runs, the rungs that
need CUDA say so, and the JSON, markdown and bar chart are written."""
import json
import os
import subprocess
import sys

RUNGS = ["reference eager fp32", "+bf16 autocast", "+channels-last", "+torch.compile", "+fused kernels",
         "+CUDA graph"]


def test_epochs_per_hour_quick(tmp_path):
    out = tmp_path / "ladder.json"
    # The eager rungs must run the fused ops' CPU path, not the Triton interpreter another test module may turn on.
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "fastsglr", "bench", "--quick", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu" and result["bf16_peak_tflops"] > 0
    entry = result["models"]["smallcnn"]
    # PGD-2 + SGLR: 2 x (forward + input gradient) + forward and full backward + clean forward = 8 forwards' worth.
    assert 7 < entry["forward_equivalents_per_image"] < 9
    rows = {row["rung"]: row for row in entry["rungs"]}
    assert list(rows) == RUNGS
    for name in RUNGS[:4]:
        row = rows[name]
        assert row["status"] == "ok", row
        assert row["seconds_per_epoch"] > 0 and row["epochs_per_hour"] == 3600 / row["seconds_per_epoch"]
        assert 0 < row["mfu"] and row["speedup"] > 0
    assert rows[RUNGS[0]]["speedup"] == 1.0
    assert all(rows[name]["status"].startswith("skipped: needs CUDA") for name in RUNGS[4:])
    loaders = {row["loader"]: row for row in result["loaders"]}
    assert loaders["gpu-resident"]["images_per_second"] > 0 and loaders["gpu-resident"]["vs_engine"] > 0
    assert loaders["ffcv"]["status"] == "ok" or loaders["ffcv"]["status"].startswith("skipped: ffcv is not installed")
    table = out.with_suffix(".md").read_text()
    assert "| +torch.compile |" in table and "measure nothing else" in table
    assert out.with_suffix(".png").stat().st_size > 0
