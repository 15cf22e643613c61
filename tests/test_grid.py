"""How `reproduce` runs a grid (issue 23), on the four-run grid of tests/tiny_grid.py (digits, the standin preset,
2 epochs): --jobs 2 trains the same runs as --jobs 1, KD-AT after its teachers; a failed run is named with its log,
the runs that do not need it finish, and the next call finishes the grid; an interrupted grid names the command that
continues it and continuing redoes no finished run; --launcher slurm through submitit's local executor (the executor
swapped only) trains the same runs; the sbatch scripts submitit writes for a real cluster (a fake sbatch and
squeue); a real single-node SLURM from Debian's packages, where a test may start one (as root); each row's
TensorBoard run, found by TensorBoard's own loader under OUT/tensorboard, holds its run's metrics.jsonl."""

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import submitit
import tiny_grid
import torch
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

import fastsglr.reproduce as reproduce_module
from fastsglr.checkpoint import load_checkpoint
from fastsglr.config import Config
from fastsglr.errors import TrainingError, UsageError
from fastsglr.reproduce import grid, local, slurm
from fastsglr.reproduce.jobs import LOG_FILE, Job
from fastsglr.robustness import AttackSettings
from fastsglr.runlock import run_lock
from fastsglr.tensorboard_events import tag
from fastsglr.trainer import read_history

SMALL = AttackSettings(apgd_steps=10, fab_steps=10, square_queries=100, check_images=64)
QUICK = dict(epochs=2, eval_subset=64, settings=SMALL, checks=False, device="cpu")
# Each of --jobs 2's processes gets half the cores: the one-process grid it is compared with trains with as many
# threads (another thread count sums floating-point reductions in another order).
THREADS = max(1, len(os.sched_getaffinity(0)) // 2)
TIMING = ("train_seconds", "eval_seconds", "epoch_seconds", "train_images_per_second")
TINY = os.path.join(os.path.dirname(__file__), "tiny_grid.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(autouse=True)
def tiny_table(monkeypatch):
    monkeypatch.setitem(reproduce_module.TABLES, "tiny", tiny_grid.tiny)


@contextlib.contextmanager
def _threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _grid(data, out, **launch):
    lines = []
    report = reproduce_module.reproduce("tiny", data, str(out), **QUICK, **launch, log=lines.append)
    return report, lines


@pytest.fixture(scope="module")
def one_at_a_time(digits_dir, tmp_path_factory):
    """The grid with --jobs 1 (in this process) and how long it took."""
    with pytest.MonkeyPatch.context() as mp, _threads(THREADS):
        mp.setitem(reproduce_module.TABLES, "tiny", tiny_grid.tiny)
        t0 = time.perf_counter()
        report, lines = _grid(digits_dir, tmp_path_factory.mktemp("jobs1") / "out", jobs=1)
    return report, lines, time.perf_counter() - t0


def _run_dirs(report) -> dict:
    """Row -> run directory, the teacher (a source) included."""
    dirs = {run["row"]: run["run_dir"] for run in report["runs"]}
    dirs.update((row, os.path.dirname(best)) for row, best in report["sources"].items())
    return dirs


def _assert_same_runs(report, reference):
    """The runs of ``report`` are those of ``reference``: per-epoch metrics (but timings), weights, evaluations."""
    dirs, reference_dirs = _run_dirs(report), _run_dirs(reference)
    assert sorted(dirs) == sorted(reference_dirs) == sorted([*tiny_grid.ROWS, "Standard (KD teacher)"])
    for row, run_dir in dirs.items():
        ours, theirs = read_history(run_dir), read_history(reference_dirs[row])
        assert [{k: v for k, v in r.items() if k not in TIMING} for r in ours] == [
            {k: v for k, v in r.items() if k not in TIMING} for r in theirs
        ], row
        for which in ("best", "final"):
            a, b = (load_checkpoint(os.path.join(d, f"{which}.pt"))["model"] for d in (run_dir, reference_dirs[row]))
            assert all(torch.equal(a[k], b[k]) for k in a), (row, which)
    assert [b["rows"] for b in report["blocks"]] == [b["rows"] for b in reference["blocks"]]
    assert report["markdown"] == reference["markdown"]


def test_two_jobs_train_the_runs_of_one(one_at_a_time, digits_dir, tmp_path):
    reference, _, _ = one_at_a_time
    report, lines = _grid(digits_dir, tmp_path / "out", jobs=2)
    _assert_same_runs(report, reference)
    dirs = _run_dirs(report)
    started = [line for line in lines if line.startswith("started ")]
    assert len(started) == 4 and all(f"on {THREADS} CPU thread" in line for line in started)
    # KD-AT starts once both its teachers have finished (and been evaluated), never before
    kd = next(i for i, line in enumerate(lines) if line.startswith("started KD-AT"))
    for teacher in ("PGD-AT (", "Standard (KD teacher) ("):
        assert any(line.startswith("[") and f"] {teacher}" in line and " done in " in line for line in lines[:kd])
    grid_lines = [line for line in lines if line.startswith("grid: ")]
    assert grid_lines[-1].startswith("grid: 4 of 4 runs done, 0 failed, 0 running, 0 waiting")
    assert any("left (" in line for line in grid_lines)  # an ETA once a run has finished
    for run_dir in dirs.values():  # each run's output is in its directory
        assert "epoch    2 |" in open(os.path.join(run_dir, LOG_FILE)).read()


def test_a_failed_run_is_named_and_the_others_finish(one_at_a_time, digits_dir, tmp_path):
    reference, _, _ = one_at_a_time
    out = tmp_path / "out"

    def here(row):  # the row's run directory under this OUT
        return os.path.join(out, "runs", "digits", os.path.basename(_run_dirs(reference)[row]))

    pgd_at = here("PGD-AT")
    os.makedirs(pgd_at)
    lines = []
    with run_lock(pgd_at):  # another process writes PGD-AT: its job fails, and KD-AT, which needs it, cannot run
        with pytest.raises(TrainingError, match=r"^2 of 4 runs failed \(listed above with their logs\)"):
            reproduce_module.reproduce("tiny", digits_dir, str(out), **QUICK, jobs=2, log=lines.append)
    failed = [line for line in lines if line.startswith("failed: ")]
    assert failed[0].startswith("failed: PGD-AT (") and "exit code 2: fastsglr: error: " in failed[0]
    assert "is being written by another fastsglr process" in failed[0]
    assert failed[0].endswith(f"log: {os.path.join(pgd_at, LOG_FILE)}")
    assert failed[1].startswith("failed: KD-AT (") and f"not run: it needs {pgd_at}, which failed" in failed[1]
    mtimes = {}
    for row in ("PGD-AT+LS", "Standard (KD teacher)"):  # the runs that do not need it finished
        assert os.path.isfile(os.path.join(here(row), "summary.json")), row
        mtimes[here(row)] = os.stat(os.path.join(here(row), "final.pt")).st_mtime_ns

    report, lines = _grid(digits_dir, out, jobs=2)  # the lock is gone: the same call finishes the grid
    _assert_same_runs(report, reference)
    assert sum(line.endswith("finished, skipped") for line in lines) == 2
    assert all(os.stat(os.path.join(d, "final.pt")).st_mtime_ns == t for d, t in mtimes.items())


def _tiny_command(digits_dir, out, *extra):
    args = ["reproduce", "tiny", "--data", digits_dir, "--out", str(out), "--epochs", "2", "--eval-subset", "64"]
    return [sys.executable, TINY, *args, "--no-checks", "--device", "cpu", *extra]


def test_an_interrupted_grid_names_the_command_that_continues_it(digits_dir, tmp_path):
    out = tmp_path / "out"
    command = _tiny_command(digits_dir, out, "--jobs", "2")
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # a third run starts once one of the first two has finished
        if line.startswith(("started PGD-AT+LS", "started KD-AT")):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("fastsglr: stopped by SIGTERM: the runs in progress stopped after their current step")
    shown = shlex.split(last.split("continue the grid with: ")[1])
    assert shown == ["fastsglr", *command[2:]] and "Ctrl-C" not in err
    logs = {d: open(os.path.join(out, "runs", "digits", d, LOG_FILE)).read() for d in os.listdir(out / "runs/digits")}
    assert not any("Ctrl-C" in text for text in logs.values())  # the workers got a SIGTERM, not a Ctrl-C
    runs = out / "runs" / "digits"
    finished = {d: os.stat(runs / d / "final.pt").st_mtime_ns for d in logs if (runs / d / "summary.json").exists()}
    assert finished, "no run had finished"

    again = subprocess.run([sys.executable, TINY, *shown[1:]], env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    skipped = [line for line in again.stdout.splitlines() if line.endswith("finished, skipped")]
    assert len(skipped) == len(finished)
    assert {d: os.stat(runs / d / "final.pt").st_mtime_ns for d in finished} == finished
    assert os.path.isfile(out / "tiny.md")


def _local_executor(path):
    return submitit.AutoExecutor(folder=path, cluster="local")


def test_launcher_slurm_through_submitits_local_executor(one_at_a_time, digits_dir, tmp_path, monkeypatch):
    reference, _, _ = one_at_a_time
    monkeypatch.setattr(slurm, "make_executor", _local_executor)
    monkeypatch.setenv("OMP_NUM_THREADS", str(THREADS))  # the tasks' torch threads
    out = tmp_path / "out"
    options = slurm.SlurmOptions(time=30, gpus_per_run=0)
    report, lines = _grid(digits_dir, out, launcher="slurm", slurm_options=options, wait=True)
    _assert_same_runs(report, reference)
    submitted = [line for line in lines if line.startswith("submitted ")]
    assert submitted[0].startswith("submitted 3 run(s) as ") and submitted[1].startswith("submitted 1 run(s) as ")
    assert "after the 2 task(s) they need: KD-AT" in submitted[1]
    assert sorted(slurm.read_record(str(out))) == sorted(_run_dirs(report).values())

    def no_training(*args, **kwargs):
        raise AssertionError("a plain reproduce trained a run that SLURM had finished")

    monkeypatch.setattr(grid, "train", no_training)
    again, _ = _grid(digits_dir, out)  # a later plain reproduce renders what finished
    assert again["markdown"] == reference["markdown"]


def _fake_slurm(tmp_path, monkeypatch):
    """sbatch that keeps each script and answers with the next job id (from 101), squeue that prints queue.txt,
    srun that submitit only looks for."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f"#!/bin/sh\nn=$(cat {bin_dir}/last 2>/dev/null || echo 100); n=$((n + 1)); echo $n > {bin_dir}/last\n"
        f'cp "$1" {bin_dir}/script_$n.sh\necho "Submitted batch job $n"\n'
    )
    (bin_dir / "squeue").write_text(f"#!/bin/sh\ncat {bin_dir}/queue.txt 2>/dev/null || true\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "squeue", "srun"):
        os.chmod(bin_dir / tool, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def _sbatch_options(script) -> dict:
    return dict(
        line.removeprefix("#SBATCH --").split("=", 1) for line in script.splitlines() if line.startswith("#SBATCH")
    )


def test_sbatch_scripts_for_a_real_cluster(digits_dir, tmp_path, monkeypatch):
    """Without --wait: the arrays submitted through the real SLURM executor, each level after the tasks it needs;
    submitting again passes over the runs whose task is queued or running, and a plain reproduce refuses them."""
    bin_dir = _fake_slurm(tmp_path, monkeypatch)
    out = tmp_path / "out"
    options = slurm.SlurmOptions(
        partition="gpu", time=90, gpus_per_run=2, account="lab", extra=(("cpus-per-task", "8"), ("qos", "high"))
    )
    report, lines = _grid(digits_dir, out, launcher="slurm", slurm_options=options, jobs=3)
    assert report is None and not (out / "tiny.md").exists()
    first, second = (bin_dir / "script_101.sh").read_text(), (bin_dir / "script_102.sh").read_text()
    common = {
        "job-name": "fastsglr-tiny",
        "partition": "gpu",
        "time": "90",
        "gpus-per-node": "2",
        "nodes": "1",
        "ntasks-per-node": "1",
        "account": "lab",
        "cpus-per-task": "8",
        "qos": "high",
    }
    for script in (first, second):
        assert _sbatch_options(script).items() >= common.items()
        assert f"{sys.executable} -u -m submitit.core._submit {out / 'slurm'}" in script
    assert _sbatch_options(first)["array"] == "0-2%3" and "dependency" not in _sbatch_options(first)
    assert "array" not in _sbatch_options(second)  # one run: a plain job
    # KD-AT after the standard teacher (the first task) and PGD-AT (the second)
    assert _sbatch_options(second)["dependency"] == "afterany:101_0:101_1"
    assert sorted(slurm.read_record(str(out)).values()) == ["101_0", "101_1", "101_2", "102"]
    assert "--wait` waits for them and renders the table" in lines[-1]

    with pytest.raises(UsageError, match=r"went to SLURM \(task 101_0\) and has not finished: .* --launcher local"):
        _grid(digits_dir, out)

    (bin_dir / "queue.txt").write_text("101_0 PENDING\n101_1 RUNNING\n102 PENDING\n999 RUNNING\n")
    _, lines = _grid(digits_dir, out, launcher="slurm", slurm_options=options)
    kept = [line for line in lines if "already queued or running" in line]
    assert len(kept) == 3 and not (bin_dir / "script_104.sh").exists()
    assert _sbatch_options((bin_dir / "script_103.sh").read_text()).get("dependency") is None  # LS alone, again
    assert sorted(slurm.read_record(str(out)).values()) == ["101_0", "101_1", "102", "103"]


def test_launcher_slurm_refusals(digits_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    with pytest.raises(UsageError, match="needs SLURM's sbatch and srun, which this machine lacks"):
        _grid(digits_dir, tmp_path / "out", launcher="slurm")
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(UsageError, match=r"needs submitit, which is not installed: pip install submitit"):
        _grid(digits_dir, tmp_path / "out", launcher="slurm")


# ------------------------------------------------------------------------------------------------ a real SLURM


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """slurmctld + slurmd (Debian's slurm-wlm, which `make test` installs as root) on this host, with a munged of
    their own; yields the SLURM_CONF to use. Needs root (CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("starting SLURM's daemons needs root (CI runs as root)")
    if not shutil.which("slurmctld"):
        pytest.skip("Debian's slurm-wlm is not installed: `make test` installs it (as root)")
    home = tmp_path_factory.mktemp("slurm")
    host = socket.gethostname().split(".")[0]
    conf = home / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=fastsglr-test",
                f"SlurmctldHost={host}(127.0.0.1)",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "SlurmUser=root",
                "AuthType=auth/munge",
                f"AuthInfo=socket={home}/munge.socket",
                f"StateSaveLocation={home}/state",
                f"SlurmdSpoolDir={home}/spool",
                f"SlurmctldPidFile={home}/slurmctld.pid",
                f"SlurmdPidFile={home}/slurmd.pid",
                f"SlurmctldLogFile={home}/slurmctld.log",
                f"SlurmdLogFile={home}/slurmd.log",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "MpiDefault=none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "ReturnToService=2",
                "AccountingStorageType=accounting_storage/none",
                "JobAcctGatherType=jobacct_gather/none",
                f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=1000 State=UNKNOWN",
                f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    for d in ("state", "spool"):
        (home / d).mkdir()
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munge = [
        "/usr/sbin/munged",
        "--foreground",
        "--force",
        f"--socket={home}/munge.socket",
        f"--pid-file={home}/munged.pid",
        f"--log-file={home}/munged.log",
        f"--seed-file={home}/munged.seed",
    ]
    daemons = [subprocess.Popen(munge, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    time.sleep(1)
    for daemon in (["slurmctld", "-D", "-f", str(conf)], ["slurmd", "-D", "-N", host, "-f", str(conf)]):
        daemon[0] = os.path.join("/usr/sbin", daemon[0])
        daemons.append(subprocess.Popen(daemon, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        deadline = time.time() + 60
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            if state.strip() == "idle":
                break
            assert time.time() < deadline, f"SLURM did not come up: sinfo says {state!r}; see {home}"
            time.sleep(1)
        yield str(conf)
    finally:
        # The tasks' srun processes end once slurmctld has seen their steps end: cancel what is left, let the queue
        # drain, then stop the daemons (an srun whose slurmctld is gone waits for ever).
        subprocess.run(["scancel", "-u", str(os.getuid())], env=env, capture_output=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True)
            if queue.returncode or not queue.stdout.strip():
                break
            time.sleep(1)
        for daemon in reversed(daemons):
            daemon.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=30)


def test_a_real_single_node_slurm(slurm_cluster, one_at_a_time, digits_dir, tmp_path, monkeypatch):
    reference, _, _ = one_at_a_time
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    monkeypatch.setenv("OMP_NUM_THREADS", str(THREADS))  # sbatch passes the environment on to the tasks
    monkeypatch.setattr(slurm, "POLL_SECONDS", 1.0)
    out = tmp_path / "out"
    options = slurm.SlurmOptions(time=30, gpus_per_run=0)
    report, lines = _grid(digits_dir, out, launcher="slurm", slurm_options=options, wait=True)
    _assert_same_runs(report, reference)
    assert "after the 2 task(s) they need: KD-AT" in next(line for line in lines if "submitted 1 run(s)" in line)


# ------------------------------------------------------------------------------------------------ TensorBoard


def test_each_rows_tensorboard_run_holds_its_metrics(one_at_a_time):
    """`tensorboard --logdir OUT/tensorboard` names the runs table/row; each holds its run's metrics.jsonl."""
    report, _, _ = one_at_a_time
    out = os.path.dirname(report["figures"][0])
    runs = EventMultiplexer().AddRunsFromDirectory(os.path.join(out, "tensorboard")).Reload()
    dirs = _run_dirs(report)
    assert sorted(runs.Runs()) == sorted(f"tiny/{row}" for row in dirs)
    for row, run_dir in dirs.items():
        history = read_history(run_dir)
        for key in ("test_pgd_acc", "train_loss", "lr"):
            events = runs.Scalars(f"tiny/{row}", tag(key))
            assert [(e.step, e.value) for e in events] == [
                (r["epoch"], float(torch.tensor(r[key], dtype=torch.float32))) for r in history
            ]


def test_grid_flags_of_another_launcher_are_refused(digits_dir, tmp_path):
    for launch, message in (
        (dict(jobs=0), "--jobs 0 is out of range: it must be at least 1"),
        (dict(runs_per_gpu=2), "--runs-per-gpu 2 packs runs on GPUs, but the runs train on the CPU: drop it"),
        (dict(wait=True), "--wait waits for SLURM jobs: add --launcher slurm, or drop --wait"),
        (dict(slurm_options=slurm.SlurmOptions()), "the --slurm-\\* flags apply to --launcher slurm"),
        (dict(launcher="slurm", runs_per_gpu=1), "--runs-per-gpu packs runs on this machine's GPUs"),
    ):
        with pytest.raises(UsageError, match=message):
            _grid(digits_dir, tmp_path / "out", **launch)
    assert not (tmp_path / "out").exists()
    assert local.slots(2, "cpu", None) == ([None, None], THREADS)


def test_each_process_sees_one_gpu_round_robin(monkeypatch, tmp_path):
    """--jobs 8 --runs-per-gpu 2 on four GPUs: two processes per GPU, each started with only its GPU visible."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")  # a user's choice of GPUs is kept
    devices, threads = local.slots(8, "cuda", 2)
    assert devices == ["4", "5", "6", "7"] * 2 and threads == max(1, len(os.sched_getaffinity(0)) // 8)
    with pytest.raises(UsageError, match=r"--jobs 8 runs 8 runs at once, but 4 GPUs x --runs-per-gpu 1 hold 4: "):
        local.slots(8, "cuda", None)
    started = []

    class Recorded:
        def __init__(self, command, env, **kwargs):
            started.append(env)
            self.stdin = open(os.devnull, "wb")

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    job = Job(Config(out=str(tmp_path / "run")), ["row"])
    for gpu in devices[:5]:
        local._start(job, gpu, threads)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in started] == ["4", "5", "6", "7", "4"]
    assert all(env["OMP_NUM_THREADS"] == str(threads) for env in started)


def test_a_job_starts_after_the_runs_it_needs(monkeypatch, tmp_path):
    """The scheduler alone, its jobs stand-ins of set lengths: with three slots, KD starts only once both its
    teachers have ended (LS, quicker, frees a slot first); one at a time, teachers come first whatever the order."""
    lengths = {"std": 0.3, "adv": 1.0, "ls": 0.05, "kd": 0.05}
    dirs = {row: str(tmp_path / row) for row in lengths}
    kd = Job(Config(out=dirs["kd"]), ["kd"], after=[dirs["std"], dirs["adv"]])
    jobs = [kd, *(Job(Config(out=dirs[row]), [row]) for row in ("std", "adv", "ls"))]  # KD first: reordered
    events = []

    def stand_in(job, gpu, threads):
        events.append(f"start {job.rows[0]}")
        return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({lengths[job.rows[0]]})"])

    monkeypatch.setattr(local, "_start", stand_in)
    local.run_here(jobs, parallel=3, devices=[None] * 3, threads=1, log=events.append, command=None)
    ended = {row: next(i for i, e in enumerate(events) if f"] {row} (" in e and ": done" in e) for row in lengths}
    assert events.index("start kd") > max(ended["std"], ended["adv"])
    assert [e for e in events if e.startswith("start ")] == ["start std", "start adv", "start ls", "start kd"]

    order = []
    monkeypatch.setattr(local, "run_job", lambda job, log: order.append(job.rows[0]))
    local.run_here(jobs, parallel=1, devices=[None], threads=1, log=lambda _: None, command=None)
    assert order == ["std", "adv", "kd", "ls"]
