"""A table's grid as jobs, whoever runs them: one job per run directory (rows that are the same run share it), which
trains (or resumes, or skips) the run and then evaluates what the table reads of it. A job runs after the jobs of
the runs it needs: KD's teachers (it trains from their best.pt) and transfer's sources (its evaluation crafts on
their best.pt). ``run_job`` is all a job does, in this process (``--jobs 1``), in a process of ``--jobs N``
(``worker.py``) or in a SLURM job (``slurm.py``): the same files, the same resume, the same run lock as
`fastsglr train` by hand."""

import contextlib
import dataclasses
import json
import os
import time

from ..config import Config
from ..errors import TrainingError, UsageError
from ..robustness import AttackSettings
from ..trainer import _duration
from .grid import _evaluate, _train_or_resume, eval_cache, finished

LOG_FILE = "reproduce.log"  # in the run directory: the output of every grid job that ran it


@dataclasses.dataclass(frozen=True)
class Evaluation:
    which: str  # "best" or "final"
    attacks: tuple
    source: str | None = None  # the checkpoint transfer attacks craft on


@dataclasses.dataclass
class Job:
    config: Config
    rows: list  # the table rows this run fills (or, for a source, stands for)
    evaluations: list = dataclasses.field(default_factory=list)
    after: list = dataclasses.field(default_factory=list)  # run directories that must finish first
    n: int | None = None  # evaluated test images (None: all)
    settings: AttackSettings = dataclasses.field(default_factory=AttackSettings)
    checks: bool = True

    @property
    def run_dir(self) -> str:
        return self.config.out

    @property
    def title(self) -> str:
        """The rows, then the directory under OUT/runs: 'PGD-AT (digits/pgd-at_hard)'."""
        where = os.path.join(*self.run_dir.split(os.sep)[-2:])
        return f"{', '.join(self.rows)} ({where})"

    @property
    def log_file(self) -> str:
        return os.path.join(self.run_dir, LOG_FILE)

    def to_json(self) -> str:
        return json.dumps(
            {
                **dataclasses.asdict(self),
                "config": self.config.to_dict(),
                "evaluations": [dataclasses.asdict(e) for e in self.evaluations],
            }
        )

    @classmethod
    def from_json(cls, text) -> "Job":
        d = json.loads(text)
        return cls(
            **{
                **d,
                "config": Config.from_dict(d["config"]),
                "evaluations": [Evaluation(e["which"], tuple(e["attacks"]), e["source"]) for e in d["evaluations"]],
                "settings": AttackSettings(**d["settings"]),
            }
        )


def plan(runs, attacks, checkpoints, **evaluation) -> list:
    """The jobs of ``runs``: (Config, row label, the run directories it needs, its transfer source checkpoint or
    None, whether the table evaluates it), in the table's order; rows of one run directory are one job.
    ``evaluation``: Job's n, settings and checks."""
    jobs = {}
    for cfg, label, needs, source, evaluated in runs:
        job = jobs.setdefault(cfg.out, Job(cfg, [], **evaluation))
        job.rows += [label] if label not in job.rows else []
        job.after += [d for d in needs if d not in job.after]
        if evaluated:
            new = [Evaluation(which, tuple(attacks), source) for which in checkpoints]
            job.evaluations += [e for e in new if e not in job.evaluations]
    return list(jobs.values())


def in_dependency_order(jobs) -> list:
    """``jobs`` in their order, each moved after the jobs of the runs it needs (the tables have no cycles)."""
    by_dir, ordered = {job.run_dir: job for job in jobs}, {}

    def place(job):
        for needed in job.after:
            if needed in by_dir and needed not in ordered:
                place(by_dir[needed])
        ordered.setdefault(job.run_dir, job)

    for job in jobs:
        place(job)
    return list(ordered.values())


def done(job: Job) -> bool:
    """Trained to its end, and every evaluation the table reads of it cached."""
    if not finished(job.run_dir):
        return False
    return all(
        (e.source is None or os.path.isfile(e.source))
        and os.path.isfile(eval_cache(job.config, e.which, e.attacks, job.n, job.settings, job.checks, e.source))
        for e in job.evaluations
    )


def run_job(job: Job, log=print):
    """Train (or resume, or skip) the job's run, then its evaluations (cached)."""
    missing = [d for d in job.after if not finished(d)]
    if missing:
        raise UsageError(
            f"{missing[0]} has not finished, and this run needs its best.pt first: its job failed or has not "
            f"run; run the grid again"
        )
    _train_or_resume(job.config, log)
    for e in job.evaluations:
        _evaluate(job.config, e.which, e.attacks, job.n, job.settings, job.checks, log, e.source)


def heading(job: Job) -> str:
    """The first line a job writes to its log: when, and which run."""
    return f"== {time.strftime('%Y-%m-%d %H:%M:%S')}: {job.title}"


@contextlib.contextmanager
def teed(job: Job, log):
    """``log`` that also appends to the job's log file (a run directory's ``reproduce.log``)."""
    os.makedirs(job.run_dir, exist_ok=True)
    with open(job.log_file, "a") as f:

        def both(message):
            log(message)
            f.write(f"{message}\n")
            f.flush()

        both(heading(job))
        yield both


class Progress:
    """One line per finished run and a grid line with an ETA (from this invocation's finished runs)."""

    def __init__(self, jobs, parallel, log):
        self.total, self.parallel, self.log = len(jobs), parallel, log
        self.finished, self.failed, self.seconds, self.t0 = 0, [], [], time.perf_counter()

    def ended(self, job, seconds, error=None, log_file=None):
        """``seconds``: how long it ran (None: not known); ``error``: why it failed (None: it succeeded);
        ``log_file``: where its output is."""
        self.finished += 1
        took = f" in {_duration(seconds)}" if seconds is not None else ""
        if seconds is not None and error is None:
            self.seconds.append(seconds)
        if error is None:
            self.log(f"[{self.finished}/{self.total}] {job.title}: done{took}")
        else:
            self.failed.append((job, error, log_file or job.log_file))
            self.log(f"[{self.finished}/{self.total}] {job.title}: FAILED: {error}; log: {log_file or job.log_file}")

    def line(self, running):
        left = self.total - self.finished
        eta = ""
        if self.seconds and left:
            per_run = sum(self.seconds) / len(self.seconds)
            eta = f", about {_duration(per_run * -(-left // max(1, min(self.parallel, left))))} left"
        self.log(
            f"grid: {self.finished - len(self.failed)} of {self.total} runs done, {len(self.failed)} failed, "
            f"{running} running, {left - running} waiting{eta} ({_duration(time.perf_counter() - self.t0)} so far)"
        )

    def check(self):
        """Raise, once every job has ended, if any failed (TrainingError: exit code 1), naming each with its log."""
        if self.failed:
            for job, error, log_file in self.failed:
                self.log(f"failed: {job.title}: {error}; log: {log_file}")
            n = len(self.failed)
            raise TrainingError(
                f"{n} of {self.total} runs failed (listed above with their logs); the others finished: fix the "
                f"cause, then run the same command again to retry {'it' if n == 1 else 'them'}"
            )
