"""Wall time of a `fastsglr reproduce` grid with --jobs 1 and with --jobs N, side by side in one call.

    python bench/grid_jobs.py --data DATA_DIR [--table schedules] [--jobs 2] [--epochs 2] [--device cpu]
                              [--out results.json]

Each grid trains from scratch in a fresh folder (--jobs 1 first, then --jobs N), through the command line as a
user runs it, with the same flags but --jobs. On a CPU --jobs N gives each run cores // N torch threads; the --jobs 1
grid gets as many (OMP_NUM_THREADS), so that both grids train each run alike (the tables must come out identical:
checked) and the ratio is that of running N runs at once, not of another thread count (torch's default, all cores,
is slower still on a busy machine: its threads wait for each other). Prints each grid's wall time, the CPU time of
its processes (this one and its workers) and the ratio. Compare on a machine with nothing else running.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import torch


def _cpu_seconds():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _grid(args, jobs, folder) -> dict:
    out = os.path.join(folder, f"jobs{jobs}")
    command = [sys.executable, "-m", "fastsglr", "reproduce", args.table, "--data", args.data, "--out", out]
    command += ["--epochs", str(args.epochs), "--eval-subset", str(args.eval_subset), "--device", args.device]
    command += ["--jobs", str(jobs)]
    threads = str(max(1, len(os.sched_getaffinity(0)) // args.jobs))
    cpu, t0 = _cpu_seconds(), time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": threads})
    wall = time.perf_counter() - t0
    with open(os.path.join(out, f"{args.table}.md")) as f:
        page = f.read()
    return {"jobs": jobs, "wall_seconds": wall, "cpu_seconds": _cpu_seconds() - cpu, "page": page}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a data directory (digits for a CPU)")
    parser.add_argument("--table", default="schedules", help="the grid (default: %(default)s, two runs)")
    parser.add_argument("--jobs", type=int, default=2, help="the parallel grid's --jobs (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval-subset", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="append the result as a JSON line to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        serial, parallel = _grid(args, 1, folder), _grid(args, args.jobs, folder)
    if serial.pop("page") != parallel.pop("page"):
        sys.exit("the two grids' tables differ")
    result = {
        "table": args.table,
        "epochs": args.epochs,
        "device": args.device,
        "cores": len(os.sched_getaffinity(0)),
        "load_average_1m": os.getloadavg()[0],
        "torch": torch.__version__,
        "machine": platform.platform(),
        "grids": [serial, parallel],
        "wall_ratio": parallel["wall_seconds"] / serial["wall_seconds"],
    }
    for grid in result["grids"]:
        print(f"--jobs {grid['jobs']}: {grid['wall_seconds']:.1f} s wall, {grid['cpu_seconds']:.1f} s CPU")
    print(f"wall time --jobs {args.jobs} / --jobs 1: {result['wall_ratio']:.2f} (identical tables)")
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
