#!/usr/bin/env bash
# One command for a GPU box: the GPU tests, the kernel benchmarks and the epochs-per-hour ladder, in under 10 minutes
# on an H100, into bench/results/<date>-<gpu>.json and .md.
#
#     bash bench/gpu_suite.sh
#
# Needs only Python with torch, triton and numpy: no network, no pip install of this package. fastsglr is imported
# from this checkout through a shim folder (setup.py installs kernels/ as fastsglr.kernels, which PYTHONPATH alone
# cannot do). pytest, matplotlib and ffcv are used when present: without pytest the tests are reported as not run,
# without ffcv the ladder times the GPU-resident loader only and says so, without matplotlib there is no bar chart.
# Each stage has a time limit; the ladder gets what is left of the budget and saves after every rung, so a run cut
# short still reports what it measured.
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
BUDGET=${BUDGET:-480}  # seconds for all stages: a 10-minute command limit, less set-up, the report and copying out
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
export TRITON_INTERPRET=0  # real kernels (a test module would otherwise switch the Triton interpreter on)
"$PYTHON" -c "import ffcv" 2>/dev/null || echo "gpu_suite: ffcv is not installed: the GPU-resident loader only"
"$PYTHON" -c "import sys, torch, triton; print(f'gpu_suite: python {sys.version.split()[0]}, torch {torch.__version__}, '
                                               f'triton {triton.__version__}')"

GPU=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name())" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' \
      | sed 's/^nvidia-//; s/-*$//')
STEM="bench/results/$(date +%Y-%m-%d)-$GPU"
mkdir -p bench/results
echo "gpu_suite: results into $STEM.json and $STEM.md"

left() { echo $(( BUDGET - (SECONDS - START) > 30 ? BUDGET - (SECONDS - START) : 30 )); }

# ---- 1. GPU tests: fast engine vs reference in bf16, kernels compiled for real, CUDA graph capture ----------------
if "$PYTHON" -c "import pytest" 2>/dev/null; then
  # -o addopts=: pytest.ini's --benchmark-disable needs pytest-benchmark, which a bare GPU box may lack.
  # Only the modules that hold gpu tests: collecting the others would import what a bare GPU box may lack.
  timeout 150 "$PYTHON" -m pytest -m gpu -q -ra -o addopts= -p no:cacheprovider --continue-on-collection-errors \
    --junitxml="$STEM-tests.xml" tests/test_fast_engine.py tests/test_distributed.py 2>&1 | tee "$STEM-tests.txt"
  echo "${PIPESTATUS[0]}" > "$STEM-tests.rc"
else
  echo "pytest is not installed: GPU tests not run" | tee "$STEM-tests.txt"
fi

# ---- 2. Kernel benchmarks ---------------------------------------------------------------------------------------
if [ -f bench/kernels.py ]; then
  timeout 90 "$PYTHON" bench/kernels.py --quick --out "$STEM-kernels.json" 2>&1 | tee "$STEM-kernels.txt"
  echo "${PIPESTATUS[0]}" > "$STEM-kernels.rc"
fi

# ---- 3. The ladder: epochs per hour of PreAct ResNet-18 and WRN-34-10 ------------------------------------------
timeout "$(left)" "$PYTHON" bench/epochs_per_hour.py --out "$STEM-ladder.json" 2>&1 | tee "$STEM-ladder.txt"
echo "${PIPESTATUS[0]}" > "$STEM-ladder.rc"

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

md = ["# GPU suite: " + os.path.basename(stem), "", "## Tests (pytest -m gpu)", "", exit_note("tests")]
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
md += ["", exit_note("ladder")]
if ladder:  # one heading level down inside this report
    md += ["#" + line if line.startswith("#") else line for line in ladder_markdown(ladder).splitlines()]
open(stem + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
echo "gpu_suite: done in $(( SECONDS - START )) s: $STEM.json, $STEM.md"
