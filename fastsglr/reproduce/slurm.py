"""``reproduce --launcher slurm``: a grid's jobs as SLURM job arrays, through submitit (facebookincubator/submitit:
``AutoExecutor(cluster="slurm")`` writes each array's sbatch script and calls sbatch; each array task unpickles one
``slurm_job`` call and runs it with the submitting machine's Python). OUT must be on the cluster's shared filesystem:
the runs, their locks and submitit's folder ``OUT/slurm`` (pickles, sbatch scripts, each task's log) are there.

The jobs go in one array per dependency level: the runs that need no other run first, then (``--dependency
afterany`` on the tasks they need) the runs that need them, KD's students after their teachers; a task whose
needed run failed fails at once (``run_job``), where ``afterok`` would leave it pending for ever. ``OUT/slurm/
submitted.json`` records each run's task; submitting again leaves alone the runs whose task is still queued or
running (``squeue``), and submits the others that are not finished. ``--wait`` watches the tasks (a task has ended
when submitit's result file exists or squeue no longer lists it as active) and judges each run by its files: trained
to its end with its evaluations cached, or failed, named with its task's log.

Only the executor differs in the tests: ``make_executor`` is swapped for submitit's local executor, which has no
dependencies, so there each level is waited for before the next is submitted."""

import dataclasses
import json
import os
import subprocess
import sys
import time

from ..errors import Interrupted, TrainingError, UsageError
from ..files import write_json
from .jobs import Progress, done, in_dependency_order, run_job, teed

RECORD = "submitted.json"
POLL_SECONDS = 10.0
GRACE_SECONDS = 60.0  # a task gone from squeue whose result file is not visible yet (a shared filesystem's delay)
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED"}


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time: int = 24 * 60  # minutes per run (sbatch --time); submitit's own default is 5
    gpus_per_run: int = 1
    account: str | None = None
    extra: tuple = ()  # (KEY, VALUE): sbatch --KEY=VALUE


def device(asked, options: SlurmOptions) -> str:
    """The runs' device: a task with GPUs trains on CUDA, whatever the submitting machine (a login node) has."""
    if asked == "cuda" and not options.gpus_per_run:
        raise UsageError("--device cuda with --slurm-gpus-per-run 0 gives the tasks no GPU: drop one of them")
    return asked or ("cuda" if options.gpus_per_run else "cpu")


def folder(out) -> str:
    return os.path.join(os.path.abspath(out), "slurm")


def make_executor(path):
    """submitit's SLURM executor writing in ``path`` (the tests swap this for its local executor)."""
    try:
        import submitit
    except ImportError:
        raise UsageError(
            "--launcher slurm needs submitit, which is not installed: pip install submitit (or pip install "
            "'fastsglr[slurm]')"
        ) from None
    try:
        return submitit.AutoExecutor(folder=path, cluster="slurm")
    except RuntimeError:  # submitit found no srun
        raise UsageError(
            "--launcher slurm needs SLURM's sbatch and srun, which this machine lacks: run the command on the "
            "cluster's login node, or drop --launcher slurm"
        ) from None


def parameters(options: SlurmOptions, table, parallel) -> dict:
    """The executor's parameters: one task per run, on one node, with its GPUs and time."""
    params = dict(
        name=f"fastsglr-{table}",
        timeout_min=options.time,
        nodes=1,
        tasks_per_node=1,
        gpus_per_node=options.gpus_per_run,
        slurm_additional_parameters=dict(options.extra),
    )
    for key, value in (("partition", options.partition), ("account", options.account)):
        if value:
            params[f"slurm_{key}"] = value
    if parallel:
        params["slurm_array_parallelism"] = parallel
    return params


def read_record(out) -> dict:
    """Run directory -> the SLURM task (``JOBID_TASK``) last submitted for it from this OUT."""
    try:
        with open(os.path.join(folder(out), RECORD)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def queued_on_slurm(out, jobs) -> list:
    """(job, task) for each of ``jobs`` that a --launcher slurm submission from OUT holds (queued, running, or
    ended without finishing it)."""
    record = read_record(out)
    return [(job, record[job.run_dir]) for job in jobs if job.run_dir in record]


def active_tasks() -> set:
    """The SLURM tasks of this user that are queued or running."""
    try:
        listed = subprocess.run(
            ["squeue", "-h", "-r", "-u", os.environ.get("USER") or str(os.getuid()), "-o", "%i %T"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UsageError(f"squeue failed ({exc}): check that SLURM answers on this machine") from None
    return {task for task, state in (line.split() for line in listed.splitlines() if line.strip()) if state in ACTIVE}


def slurm_job(job):
    """What a SLURM task runs: ``run_job``, its output also in the run's ``reproduce.log``, and its one-line error
    on the task's stderr before submitit records the traceback."""
    with teed(job, print) as log:
        try:
            run_job(job, log)
        except (UsageError, TrainingError, Interrupted) as exc:
            log(f"fastsglr: error: {exc}")
            print(f"fastsglr: error: {exc}", file=sys.stderr, flush=True)
            raise


def _levels(jobs) -> list:
    """``jobs`` in dependency levels: each job one level after the latest job (among ``jobs``) that it needs."""
    level = {}
    for job in jobs:  # in dependency order
        level[job.run_dir] = 1 + max((level[d] for d in job.after if d in level), default=-1)
    return [[job for job in jobs if level[job.run_dir] == n] for n in range(max(level.values(), default=-1) + 1)]


def submit(jobs, *, out, table, options, parallel, wait, log, command):
    """Submit ``jobs`` (dependency order) not already queued; with ``wait``, wait for them and raise TrainingError
    if any failed. Returns whether every job is done."""
    executor = make_executor(folder(out))
    executor.update_parameters(**parameters(options, table, parallel))
    slurm = executor.cluster == "slurm"
    record = read_record(out)
    active = active_tasks() if slurm else set()
    queued = {job.run_dir: record[job.run_dir] for job in jobs if record.get(job.run_dir) in active}
    for job in jobs:
        if job.run_dir in queued:
            log(f"{job.title}: already queued or running as SLURM task {queued[job.run_dir]}, not submitted again")
    tasks = {}  # run directory -> submitit job
    levels = _levels(in_dependency_order([job for job in jobs if job.run_dir not in queued]))
    for n, level in enumerate(levels):
        needed = sorted(
            {tasks[d].job_id if d in tasks else queued[d] for job in level for d in job.after if d in {*tasks, *queued}}
        )
        executor.update_parameters(slurm_dependency=f"afterany:{':'.join(needed)}" if needed else None)
        with executor.batch():
            submitted = [executor.submit(slurm_job, job) for job in level]
        tasks.update((job.run_dir, task) for job, task in zip(level, submitted))
        record.update((job.run_dir, task.job_id) for job, task in zip(level, submitted))
        write_json(os.path.join(folder(out), RECORD), record)
        after = f", after the {len(needed)} task(s) they need" if needed else ""
        log(f"submitted {len(level)} run(s) as {submitted[0].job_id.split('_')[0]}{after}: {_titles(level)}")
        if not slurm and n + 1 < len(levels):  # a local executor has no dependencies: the level ends first
            _wait({job.run_dir: (job, tasks[job.run_dir]) for job in level}, slurm, Progress(level, 0, lambda _: None))
    if not wait:
        log(
            f"the runs' logs are in {folder(out)}; `{command} --wait` waits for them and renders the table, or "
            f"once they have finished `{command}` renders it; the same command again submits only the runs "
            f"neither finished nor queued"
        )
        return False
    import submitit

    earlier = {d: submitit.SlurmJob(folder=folder(out), job_id=task) for d, task in queued.items()}
    watched = {job.run_dir: (job, tasks.get(job.run_dir) or earlier[job.run_dir]) for job in jobs}
    progress = Progress(jobs, parallel or len(jobs), log)
    _wait(watched, slurm, progress)
    progress.check()
    return True


def _titles(jobs) -> str:
    return "; ".join(job.title for job in jobs)


def _wait(watched, slurm, progress):
    """Until every watched task (run directory -> (job, submitit job)) has ended: one line per ended run, judged
    by its files, and the grid line."""
    gone_since = {}
    while watched:
        active = active_tasks() if slurm else set()
        for run_dir, (job, task) in list(watched.items()):
            if task.paths.result_pickle.exists() or not slurm:
                ended = task.done()
            else:  # SLURM knows best whether it is queued; sacct, which submitit asks, may be off
                gone = gone_since.setdefault(run_dir, time.time()) if task.job_id not in active else None
                ended = gone is not None and time.time() - gone > GRACE_SECONDS
            if ended:
                del watched[run_dir]
                if done(job):
                    progress.ended(job, None)
                else:
                    progress.ended(job, None, _error(task), str(task.paths.stderr))
                progress.line(len(watched))
        if watched:
            time.sleep(POLL_SECONDS if slurm else 0.5)


def _error(task) -> str:
    """The task's one-line error, or what is known of its end."""
    try:
        with open(task.paths.stderr, errors="replace") as f:
            errors = [line.strip() for line in f if line.startswith("fastsglr: error:")]
    except OSError:
        errors = []
    if errors:
        return errors[-1].removeprefix("fastsglr: error: ")
    return f"SLURM task {task.job_id} ended without finishing the run (a time limit, a cancel or a node failure?)"
