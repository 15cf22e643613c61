"""A grid's jobs on this machine: one after another in this process (``--jobs 1``: with the fast engine each
structure compiles once for the whole grid), or N at once, each in a process of its own (``worker.py``) pinned to
one device: ``CUDA_VISIBLE_DEVICES`` round robin over the visible GPUs (``--runs-per-gpu K`` puts K runs on one),
on a CPU the cores divided among the processes (torch threads per process).

Either way a job starts once the jobs of the runs it needs have succeeded; a failed job stops only the jobs that
need its run; every job's output is in its run directory's ``reproduce.log``. SIGINT / SIGTERM / SIGHUP stop the
grid: the runs in progress stop after their current step with a last.pt (in their own processes, the signal is
passed on to them), no new run starts, and the message names the command that continues the grid."""

import os
import signal
import subprocess
import sys
import time

from ..errors import Interrupted, TrainingError, UsageError
from ..stop import signals_to
from .jobs import Progress, in_dependency_order, run_job, teed

POLL_SECONDS = 0.2


def continue_with(command) -> str:
    return f"continue the grid with: {command}" if command else "call reproduce again to continue the grid"


def visible_gpus() -> list:
    """The GPUs this process sees, as CUDA_VISIBLE_DEVICES names them for a child process."""
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [name.strip() for name in listed.split(",")][:count]


def slots(parallel, device, runs_per_gpu) -> tuple:
    """Each of the ``parallel`` processes' GPU (None on a CPU), and the torch threads of each (the cores divided
    among them); checked before any work starts."""
    threads = max(1, len(os.sched_getaffinity(0)) // parallel)
    if device != "cuda":
        if runs_per_gpu is not None:
            raise UsageError(
                f"--runs-per-gpu {runs_per_gpu} packs runs on GPUs, but the runs train on the CPU: drop it"
            )
        return [None] * parallel, threads
    gpus, per_gpu = visible_gpus(), runs_per_gpu or 1
    if parallel > len(gpus) * per_gpu:
        raise UsageError(
            f"--jobs {parallel} runs {parallel} runs at once, but {len(gpus)} GPU{'s' * (len(gpus) != 1)} x "
            f"--runs-per-gpu {per_gpu} hold {len(gpus) * per_gpu}: lower --jobs or raise --runs-per-gpu"
        )
    return [gpus[i % len(gpus)] for i in range(parallel)], threads


def run_here(jobs, *, parallel, devices, threads, log, command):
    """Run ``jobs`` (in an order where every job comes after the jobs it needs); raise TrainingError at the end if
    any failed, Interrupted when a signal stopped the grid."""
    jobs = in_dependency_order(jobs)
    progress = Progress(jobs, parallel, log)
    if parallel == 1:
        _in_this_process(jobs, progress, log, command)
    else:
        _in_processes(jobs, devices, threads, progress, log, command)
    progress.check()


def _blocked(job, failed):
    needed = [d for d in job.after if d in failed]
    return needed and f"not run: it needs {needed[0]}, which failed"


def _in_this_process(jobs, progress, log, command):
    failed = set()
    for job in jobs:
        if _blocked(job, failed):
            progress.ended(job, 0.0, _blocked(job, failed))
            failed.add(job.run_dir)
            continue
        t0 = time.perf_counter()
        try:
            with teed(job, log) as both:
                try:
                    run_job(job, both)
                except (UsageError, TrainingError) as exc:
                    both(f"fastsglr: error: {exc}")
                    raise
        except Interrupted as exc:
            raise Interrupted(
                f"stopped while running {job.title}; its last.pt holds where it stopped: {continue_with(command)}",
                exc.exit_code - 128,
            ) from None
        except (UsageError, TrainingError) as exc:
            progress.ended(job, time.perf_counter() - t0, str(exc))
            failed.add(job.run_dir)
        else:
            progress.ended(job, time.perf_counter() - t0)
        progress.line(0)


class _Forward:
    """While running worker processes: a signal is remembered and passed on to every running worker (each stops
    after its current step; a second SIGINT stops them at once, as Ctrl-C twice does a run)."""

    def __init__(self):
        self.signum, self.running = None, {}

    def handle(self, signum, frame):
        self.signum = signum
        for proc in list(self.running):
            proc.send_signal(signum)


def _start(job, gpu, threads):
    # Unbuffered: the log shows each epoch as it ends, not when the run does.
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    os.makedirs(job.run_dir, exist_ok=True)
    with open(job.log_file, "a") as log_file:
        # A session of its own: a Ctrl-C in the terminal reaches the grid only, which passes it on once.
        worker = ["-m", "fastsglr.reproduce.worker", "--threads", str(threads), "--parent", str(os.getpid())]
        proc = subprocess.Popen(
            [sys.executable, *worker],
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    proc.stdin.write(job.to_json().encode())
    proc.stdin.close()
    return proc


def _last_error(log_file) -> str:
    """The worker's one-line error (its last ``fastsglr:`` line), or the last line of its log."""
    try:
        with open(log_file, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("fastsglr:")]
    return (errors or lines or ["no output"])[-1]


def _in_processes(jobs, devices, threads, progress, log, command):
    waiting, free, failed = list(jobs), list(range(len(devices))), set()
    unfinished = {job.run_dir for job in jobs}
    forward = _Forward()
    with signals_to(forward.handle):
        running = forward.running  # Popen -> (job, start time, slot)
        while waiting or running:
            for job in [] if forward.signum else list(waiting):
                if _blocked(job, failed):
                    waiting.remove(job)
                    progress.ended(job, 0.0, _blocked(job, failed))
                    failed.add(job.run_dir)
                elif free and not any(d in unfinished for d in job.after):
                    slot = free.pop(0)
                    waiting.remove(job)
                    running[_start(job, devices[slot], threads)] = (job, time.perf_counter(), slot)
                    cpu = f"{threads} CPU thread{'s' * (threads != 1)}"
                    on = f"GPU {devices[slot]}" if devices[slot] is not None else cpu
                    log(f"started {job.title} on {on}; log: {job.log_file}")
            if forward.signum and not running:
                break
            time.sleep(POLL_SECONDS)
            for proc in [p for p in running if p.poll() is not None]:
                job, t0, slot = running.pop(proc)
                free.append(slot)
                if proc.returncode == 0:
                    unfinished.discard(job.run_dir)
                    progress.ended(job, time.perf_counter() - t0)
                elif not forward.signum:
                    failed.add(job.run_dir)
                    progress.ended(
                        job,
                        time.perf_counter() - t0,
                        f"exit code {proc.returncode}: {_last_error(job.log_file)}",
                    )
                progress.line(len(running))
    if forward.signum:
        raise Interrupted(
            f"stopped by {signal.Signals(forward.signum).name}: the runs in progress stopped after their current "
            f"step with a last.pt, no other run started; {continue_with(command)}",
            forward.signum,
        )
