#!/usr/bin/env bash
# One command for a GPU box, in under 9 minutes, into bench/results/<date>-<gpu>.json and .md. What matters is
# measured first, so a lease cut short still yields it; each stage leaves its own results under bench/results/:
#   1. the headline rung (the full fast configuration, PreAct ResNet-18, PGD-10 + SGLR)
#   2. a whole `fastsglr train` epoch end to end (training, PGD-20 evaluation of the whole test set, checkpoint),
#      without FFCV, on synthetic CIFAR-shaped data (50,000 / 10,000 images) prepared here by `fastsglr prepare`,
#      beside a whole epoch of the conventional loop (bench/conventional_loop.py: the DataLoader of PIL images, eager
#      fp32 with TF32 convolutions, an .item() per step; timed over 100 training batches, the rest extrapolated)
#   3. the GPU tests with the real (compiled, not interpreted) Triton kernels
#   4. the kernel benchmarks
#   5. the rest of the ladder (the conventional loop, both references, the other rungs, WRN-34-10) with what is
#      left of the budget, on the data of stage 2
# The stages share one Inductor (and Triton) cache under bench/results/.cache (ignored by git), so a graph compiled
# by one stage is not compiled again by the next.
#
#     bash bench/gpu_suite.sh
#
# Needs only Python with torch, triton and numpy: no network, no pip install of this package. fastsglr is imported
# from this checkout through a shim folder (setup.py installs kernels/ as fastsglr.kernels, which PYTHONPATH alone
# cannot do). pytest, matplotlib, ffcv, torchvision and Pillow are used when present: without pytest the tests are
# reported as not run, without ffcv the ladder times the GPU-resident loader only and says so, without torchvision or
# Pillow the conventional loop is reported as skipped, without matplotlib there is no bar chart.
# Each stage has a time limit; the ladder gets what is left of the budget and saves after every rung, so a run cut
# short still reports what it measured.
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
BUDGET=${BUDGET:-540}  # seconds for all stages: 9 minutes, inside a 10-minute command limit with the report
START=$SECONDS

# ---- Environment ----------------------------------------------------------------------------------------------
if ! "$PYTHON" -c "import torch, triton, numpy" 2>/dev/null; then
  echo "gpu_suite: $PYTHON cannot import torch, triton and numpy: install them (or set PYTHON=...)"; exit 2
fi
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_suite: no CUDA GPU visible to torch"; exit 2
fi
SHIM=$(mktemp -d)
trap 'rm -rf "$SHIM"' EXIT
mkdir "$SHIM/fastsglr"
for entry in "$REPO"/fastsglr/*; do ln -s "$entry" "$SHIM/fastsglr/"; done
ln -s "$REPO/kernels" "$SHIM/fastsglr/kernels"
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
# `python -m` and `python -` put the working directory first on sys.path, where ./fastsglr (without its kernels)
# would shadow the shim; safe-path mode (Python >= 3.11) leaves it out.
export PYTHONSAFEPATH=1
unset TRITON_INTERPRET  # real kernels: tests/conftest.py turns the interpreter on only where there is no GPU
CACHE="$REPO/bench/results/.cache"
export TORCHINDUCTOR_CACHE_DIR="$CACHE/inductor" TRITON_CACHE_DIR="$CACHE/triton"
mkdir -p "$TORCHINDUCTOR_CACHE_DIR" "$TRITON_CACHE_DIR"
"$PYTHON" -c "import ffcv" 2>/dev/null || echo "gpu_suite: ffcv is not installed: the GPU-resident loader only"
"$PYTHON" -c "import torchvision, PIL" 2>/dev/null \
  || echo "gpu_suite: torchvision or Pillow is not installed: the conventional loop is skipped"
"$PYTHON" -c "import sys, torch, triton; print(f'gpu_suite: python {sys.version.split()[0]}, torch {torch.__version__}, '
                                               f'triton {triton.__version__}')"

GPU=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name())" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' \
      | sed 's/^nvidia-//; s/-*$//')
STEM="bench/results/$(date +%Y-%m-%d)-$GPU"
mkdir -p bench/results
echo "gpu_suite: results into $STEM.json and $STEM.md"

left() { echo $(( BUDGET - (SECONDS - START) )); }

# ---- 1. The headline: the full fast configuration of PreAct ResNet-18 -----------------------------------------
rm -f "$STEM-ladder.json"  # stages 1, 2 and 5 add to it: a suite run starts it afresh
timeout 110 "$PYTHON" bench/epochs_per_hour.py --only headline --models preactresnet18 --out "$STEM-ladder.json" \
  2>&1 | tee "$STEM-headline.txt"
echo "${PIPESTATUS[0]}" > "$STEM-headline.rc"

# ---- 2. A whole `fastsglr train` epoch, without FFCV, on synthetic CIFAR-shaped data ------------------------------
DATA="$CACHE/synthetic-50000"
: > "$STEM-end-to-end.txt"
if [ ! -f "$DATA/meta.json" ]; then
  timeout 45 "$PYTHON" -m fastsglr prepare --dataset synthetic --synthetic-train 50000 --synthetic-test 10000 \
    --out "$DATA" 2>&1 | tee -a "$STEM-end-to-end.txt"
fi
timeout 170 "$PYTHON" bench/epochs_per_hour.py --only end-to-end --models preactresnet18 --data "$DATA" \
  --out "$STEM-ladder.json" 2>&1 | tee -a "$STEM-end-to-end.txt"
echo "${PIPESTATUS[0]}" > "$STEM-end-to-end.rc"

# ---- 3. GPU tests: fast engine vs reference in bf16, kernels compiled for real, CUDA graph capture ----------------
if "$PYTHON" -c "import pytest" 2>/dev/null; then
  # -o addopts=: pytest.ini's --benchmark-disable needs pytest-benchmark, which a bare GPU box may lack.
  # Only the modules that hold gpu tests: collecting the others would import what a bare GPU box may lack.
  timeout 110 "$PYTHON" -m pytest -m gpu -q -ra -o addopts= -p no:cacheprovider --continue-on-collection-errors \
    --junitxml="$STEM-tests.xml" tests/test_fast_engine.py tests/test_distributed.py 2>&1 | tee "$STEM-tests.txt"
  echo "${PIPESTATUS[0]}" > "$STEM-tests.rc"
else
  echo "pytest is not installed: GPU tests not run" | tee "$STEM-tests.txt"
fi

# ---- 4. Kernel benchmarks ---------------------------------------------------------------------------------------
if [ -f bench/kernels.py ]; then
  timeout 60 "$PYTHON" bench/kernels.py --quick --out "$STEM-kernels.json" 2>&1 | tee "$STEM-kernels.txt"
  echo "${PIPESTATUS[0]}" > "$STEM-kernels.rc"
fi

# ---- 5. The rest of the ladder: the conventional loop, both references, the other rungs, WRN-34-10, the loaders --
LADDER_DATA=()
[ -f "$DATA/meta.json" ] && LADDER_DATA=(--data "$DATA")  # the conventional rung reads a data directory
if [ "$(left)" -gt 20 ]; then
  timeout "$(left)" "$PYTHON" bench/epochs_per_hour.py --only ladder ${LADDER_DATA[@]+"${LADDER_DATA[@]}"} \
    --out "$STEM-ladder.json" 2>&1 | tee "$STEM-ladder.txt"
  echo "${PIPESTATUS[0]}" > "$STEM-ladder.rc"
else
  echo "no time left in the budget for the rest of the ladder" | tee "$STEM-ladder.txt"
  echo 124 > "$STEM-ladder.rc"
fi

# ---- Report: one JSON and one markdown file ---------------------------------------------------------------------
"$PYTHON" - "$STEM" <<'EOF'
import json, os, sys
import xml.etree.ElementTree as ET

sys.path.insert(0, "bench")
from epochs_per_hour import markdown as ladder_markdown

stem = sys.argv[1]


def read(suffix, parse=lambda f: f.read().strip()):
    return parse(open(stem + suffix)) if os.path.exists(stem + suffix) else None


def exit_note(stage):
    rc = read(f"-{stage}.rc")
    if rc in (None, "0"):
        return ""
    return f"**{stage}: " + ("cut by its time limit" if rc in ("124", "137") else f"exit code {rc}") + \
        f"** (log: {os.path.basename(stem)}-{stage}.txt)\n\n"


tests = None
if os.path.exists(stem + "-tests.xml"):
    suite = ET.parse(stem + "-tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    tests["failed"] = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                       if case.find("failure") is not None or case.find("error") is not None]
kernels, ladder = read("-kernels.json", json.load), read("-ladder.json", json.load)
json.dump({"tests": tests, "kernels": kernels, "ladder": ladder}, open(stem + ".json", "w"), indent=1)

md = ["# GPU suite: " + os.path.basename(stem), "",
      "".join(exit_note(stage) for stage in ("headline", "end-to-end", "ladder"))]
if ladder:  # one heading level down inside this report
    md += ["#" + line if line.startswith("#") else line for line in ladder_markdown(ladder).splitlines()]
md += ["", "## Tests (pytest -m gpu)", "", exit_note("tests")]
if tests is None:
    md.append("not run: " + (read("-tests.txt") or "no log"))
else:
    md.append(f"{tests['tests']} run, {tests['failures'] + tests['errors']} failed, {tests['skipped']} skipped")
    md += [f"- FAILED {name}" for name in tests["failed"]]
md += ["", "## Kernels (bench/kernels.py)", "", exit_note("kernels")]
if kernels:
    checks = kernels.get("checks", [])
    md += [f"correctness: {sum(c['ok'] for c in checks)} of {len(checks)} checks ok; device-to-device copy "
           f"{kernels.get('copy_gbps', float('nan')):.0f} GB/s", "",
           "| op | provider | size | dtype | us | GB/s | of copy |", "|---|---|---|---|---:|---:|---:|"]
    md += [f"| {t['op']} | {t['provider']} | {t['size']} | {t['dtype']} | {t['us']:.1f} | {t['gbps']:.0f} | "
           f"{100 * t['fraction_of_copy']:.0f}% |" for t in kernels.get("timings", [])]
open(stem + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
echo "gpu_suite: done in $(( SECONDS - START )) s: $STEM.json, $STEM.md"
