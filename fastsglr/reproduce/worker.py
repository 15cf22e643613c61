"""One job of ``reproduce --jobs N`` in a process of its own: ``python -m fastsglr.reproduce.worker --threads T
--parent PID`` reads the job (``Job.to_json``) from stdin and runs it as `fastsglr` runs a command (signals, one-line
errors, exit codes); local.py starts it with its output going to the run's ``reproduce.log``."""

import argparse
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_with(parent):
    """SIGTERM this process when the grid's process dies, however it dies (SIGKILL too): the run stops after its
    step with a last.pt, instead of training on unwatched and holding its lock. Linux only."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastsglr.reproduce.worker")
    parser.add_argument("--threads", type=int, required=True, help="torch threads (a share of the CPU cores)")
    parser.add_argument("--parent", type=int, required=True, help="the grid's process id")
    args = parser.parse_args(argv)
    _stop_with(args.parent)

    import torch

    from ..cli import run_command
    from .jobs import Job, heading, run_job

    torch.set_num_threads(args.threads)
    job = Job.from_json(sys.stdin.read())
    print(heading(job), flush=True)
    return run_command(
        lambda: run_job(job) or 0, lambda: "no file was left half-written: the grid's command continues the run"
    )


if __name__ == "__main__":
    sys.exit(main())
