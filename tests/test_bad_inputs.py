"""Every bad input in the error table (docs/errors.md, "Bad input and the errors it gets"), run through the command
line: exit code 2, exactly the table's error line on stderr, and nothing written. That page is the one list: a row
added there is tested here, and a row whose command needs set-up this file lacks fails the table check. Also: a disk
that fills mid-write keeps the previous file and leaves no temp file behind."""

import errno
import fcntl
import hashlib
import io
import itertools
import json
import os
import re
import shlex
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from fastsglr.checkpoint import FORMAT_VERSION, MAGIC, load_checkpoint, save_checkpoint
from fastsglr.cli import main
from fastsglr.data.beton import ffcv_available
from fastsglr.errors import UsageError
from fastsglr.files import write_json

ERRORS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
SECTION = "# Bad input and the errors it gets"
# Placeholders in the table's commands. Shared ones are made once for the module (RUN_PLACES); the others are paths
# in each row's own scratch folder.
RUN_PLACES = (
    "DIGITS",
    "SYNTH",
    "RUN",
    "CKPT",
    "CIFAR_CKPT",
    "NOT_CKPT",
    "TRUNCATED_CKPT",
    "NO_ARRAYS",
    "NO_BETON",
    "SWAPPED_BETON",
    "EVIL_CKPT",
    "LOCKED_RUN",
    "PID",
    "CHANGED_RUN",
    "CHANGED_DATA",
    "DAMAGED_CONFIG_RUN",
    "LYING_META",
)
ROW_PLACES = ("OUT", "NOWHERE", "FULL", "LONG_NAME")
LONG_NAME = "x" * 300  # one path component longer than any file system allows (255 bytes)
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]{2,}\b")  # in a command; in an error line only the names above count
CODE = re.compile(r"^(`+) ?(.+?) ?\1$")  # a cell that is one markdown code span (`` when it holds a `)
FULL_FREE = 10 << 10  # what the device holding FULL reports free: room for nothing

Row = namedtuple("Row", "input command error")


def _table_rows():
    """(input, command, error line) of every row of the error table; the last two are code spans."""
    after = ERRORS_PAGE.read_text().split(SECTION, 1)[1].splitlines()
    start = next(i for i, line in enumerate(after) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), after[start:]))
    rows = []
    for line in table[2:]:  # after the header and the |---| line
        what, *code = (cell.strip() for cell in line.strip("|").split("|"))
        spans = [CODE.match(cell) for cell in code]
        assert all(spans), f"{what}: the command and the error must each be one code span"
        rows.append(Row(what, *(span.group(2) for span in spans)))
    return rows


ROWS = _table_rows()


def test_table_is_complete_and_every_command_can_be_set_up():
    assert len(ROWS) >= 40, "the error table lost rows"
    assert len({r.input for r in ROWS}) == len(ROWS), "two rows share an input"
    for row in ROWS:
        assert row.command.startswith("fastsglr "), row
        unknown = set(PLACEHOLDER.findall(row.command)) - set(RUN_PLACES) - set(ROW_PLACES)
        assert not unknown, f"{row.input}: this test cannot set up {sorted(unknown)}"


# ------------------------------------------------------------------------------------------------ set-up

# A quick run: what these tests need is its files, not its robustness.
QUICK = ["--preset", "demo", "--attack-steps", "1", "--engine", "reference", "--loader", "device", "--device", "cpu"]


def _run(args):
    assert main(["train", *args, *QUICK, "--epochs", "1"]) == 0


class _OpensAFile:
    """Unpickled, it creates ``path``: a stand-in for any code a hostile checkpoint could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def _hostile_checkpoint(good, path, marker):
    """``good``'s state with an object whose unpickling opens ``marker``, under a valid header: the checksum only
    proves a file intact, anyone can compute it."""
    state = load_checkpoint(good)
    state["history"] = _OpensAFile(marker)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = b"%s %d %s\n" % (MAGIC, FORMAT_VERSION, hashlib.sha256(payload).hexdigest().encode())
    path.write_bytes(header + payload)


@pytest.fixture(scope="module")
def places(digits_dir, noisy_digits_dir, tmp_path_factory):
    """The module's shared inputs, made once: finished one-epoch runs on digits and on (fake) CIFAR-10, a synthetic
    data directory, damaged checkpoints, data and run directories, and a run whose lock this process holds."""
    from fake_cifar import _write_cifar10

    from fastsglr.data.prepare import prepare

    root = tmp_path_factory.mktemp("bad_inputs")
    quiet = dict(log=lambda *_: None)
    synth = root / "synthetic"
    prepare("synthetic", str(synth), synthetic_train=64, synthetic_test=16, **quiet)
    _write_cifar10(root / "raw", np.random.default_rng(0))
    prepare("cifar10", str(root / "cifar10"), root=str(root / "raw"), **quiet)
    _run(["--data", digits_dir, "--out", str(root / "run"), "--labels", "hard", "--eval-subset", "50"])
    _run(
        ["--data", str(root / "cifar10"), "--out", str(root / "cifar_run"), "--batch-size", "16", "--eval-subset", "6"]
    )

    ckpt = root / "run" / "final.pt"
    torch.save(load_checkpoint(str(ckpt))["model"], root / "weights.pt")  # plain torch weights: not ours
    (root / "truncated.pt").write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    no_arrays = shutil.copytree(digits_dir, root / "no_arrays")
    os.remove(no_arrays / "train.npz")
    no_beton = shutil.copytree(digits_dir, root / "no_beton")
    os.remove(no_beton / "train.beton")
    swapped = shutil.copytree(digits_dir, root / "swapped_beton")  # same shape and size, other labels
    shutil.copy(os.path.join(noisy_digits_dir, "train.beton"), swapped / "train.beton")
    _hostile_checkpoint(str(ckpt), root / "evil.pt", str(root / "code_ran"))  # code_ran: a file the row must not write
    locked = shutil.copytree(root / "run", root / "locked_run")
    os.remove(locked / "final.pt")  # not finished: a resume goes on to train, so it needs the lock
    damaged = shutil.copytree(root / "run", root / "damaged_config_run")
    (damaged / "config.json").write_text("")
    lying = shutil.copytree(digits_dir, root / "lying_meta")  # its labels go up to 9
    meta = json.loads((lying / "meta.json").read_text())
    (lying / "meta.json").write_text(json.dumps({**meta, "classes": meta["classes"][:5], "num_classes": 5}))
    changed = shutil.copytree(digits_dir, root / "changed_data")
    _run(["--data", str(changed), "--out", str(root / "changed_run"), "--labels", "hard", "--eval-subset", "50"])
    prepare("digits", str(changed), label_noise=0.4, **quiet)  # re-prepared under the run: other labels
    lock = os.open(locked / ".lock", os.O_RDWR | os.O_CREAT)  # held by this process, as a running train would
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
    yield {
        "DIGITS": digits_dir,
        "SYNTH": str(synth),
        "RUN": str(root / "run"),
        "CKPT": str(ckpt),
        "CIFAR_CKPT": str(root / "cifar_run" / "final.pt"),
        "NOT_CKPT": str(root / "weights.pt"),
        "TRUNCATED_CKPT": str(root / "truncated.pt"),
        "NO_ARRAYS": str(no_arrays),
        "NO_BETON": str(no_beton),
        "SWAPPED_BETON": str(swapped),
        "EVIL_CKPT": str(root / "evil.pt"),
        "LOCKED_RUN": str(locked),
        "PID": str(os.getpid()),
        "CHANGED_RUN": str(root / "changed_run"),
        "CHANGED_DATA": str(changed),
        "DAMAGED_CONFIG_RUN": str(damaged),
        "LYING_META": str(lying),
        "ROOT": str(root),
    }  # ROOT: not a placeholder, what rows must not touch
    os.close(lock)


@pytest.fixture
def full_device(tmp_path, monkeypatch):
    """A folder whose device reports only FULL_FREE bytes free; every other path reports the truth."""
    full = tmp_path / "full"
    full.mkdir()
    real = shutil.disk_usage

    def disk_usage(path):
        usage = real(path)
        if os.path.abspath(path).startswith(str(full)):
            return usage._replace(free=FULL_FREE)
        return usage

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    return str(full)


def _files(*roots):
    """Every file under ``roots`` with its size and modification time: what 'nothing written' compares."""
    paths = [os.path.join(d, f) for root in roots for d, _, names in os.walk(root) for f in names]
    return {path: (os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in paths}


# ------------------------------------------------------------------------------------------------ the table

# Rows that give the right error but only after writing something: the check must move before the write.


@pytest.mark.parametrize("row", ROWS, ids=[r.input for r in ROWS])
def test_bad_input_gets_its_error(row, places, full_device, tmp_path, capsys, monkeypatch):
    if "--device cuda" in row.command and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    paths = {
        **places,
        "OUT": str(tmp_path / "out"),
        "NOWHERE": str(tmp_path / "nowhere"),
        "FULL": full_device,
        "LONG_NAME": LONG_NAME,
    }
    places_in = re.compile(r"\b({})\b".format("|".join(RUN_PLACES + ROW_PLACES)))

    def fill(text):
        return places_in.sub(lambda m: paths[m.group(0)], text)

    argv = [fill(arg) for arg in shlex.split(row.command)[1:]]
    before = _files(places["ROOT"], places["DIGITS"], tmp_path)

    without_ffcv = "needs FFCV, which cannot be imported" in row.error
    if without_ffcv:  # the row's machine: `import ffcv` fails there
        monkeypatch.setitem(sys.modules, "ffcv", None)
        ffcv_available.cache_clear()
    try:
        code = main(argv)
    finally:
        if without_ffcv:
            monkeypatch.undo()
            ffcv_available.cache_clear()

    assert (code, capsys.readouterr().err) == (2, f"fastsglr: error: {fill(row.error)}\n")
    written = {f: s for f, s in _files(places["ROOT"], places["DIGITS"], tmp_path).items() if before.get(f) != s}
    assert not written, f"the error came after writing {sorted(written)}"


# ------------------------------------------------------------------------------------------------ a full disk mid-way


def _fsync_fails(monkeypatch, code=errno.ENOSPC, when=lambda path: True):
    """The data reaches the temp file, then the device reports an error on fsync (where a full disk shows on NFS,
    quotas and delayed allocation) for the files ``when`` picks; other files sync as usual."""
    real = os.fsync

    def fsync(fd):
        if when(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_mid_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    last = tmp_path / "run" / "last.pt"
    last.parent.mkdir()
    good = torch.randn(100)
    save_checkpoint(str(last), {"epoch": 1, "w": good}, keep_previous=True)
    _fsync_fails(monkeypatch)
    with pytest.raises(UsageError) as exc:
        save_checkpoint(str(last), {"epoch": 2, "w": torch.randn(100)}, keep_previous=True)
    monkeypatch.undo()
    assert str(exc.value) == (
        f"no space left on the device writing {last}: free space, then fastsglr train "
        f"--resume {last.parent} (the last good checkpoint is kept)"
    )
    state = load_checkpoint(str(last))
    assert state["epoch"] == 1 and torch.equal(state["w"], good)
    assert os.listdir(last.parent) == ["last.pt"]  # no temp file, and last.pt was not moved aside


def test_full_disk_mid_json_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_json(str(path), {"old": 1})
    _fsync_fails(monkeypatch)
    with pytest.raises(UsageError, match=f"^no space left on the device writing {path}: free space, then run"):
        write_json(str(path), {"new": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": 1} and os.listdir(tmp_path) == ["summary.json"]


def test_other_write_errors_still_raise_and_clean_up(tmp_path, monkeypatch):
    _fsync_fails(monkeypatch, errno.EIO)
    with pytest.raises(OSError) as exc:
        save_checkpoint(str(tmp_path / "c.pt"), {"w": 1})
    assert exc.value.errno == errno.EIO and os.listdir(tmp_path) == []


def test_run_stopped_by_a_full_disk_resumes(digits_dir, tmp_path, monkeypatch, capsys):
    """End to end: the disk fills while epoch 2's last.pt is written; the run stops with the one-line error, last.pt
    still holds epoch 1, and once there is space `--resume` finishes the run."""
    out, written = tmp_path / "run", []

    def second_last_pt(path):
        written.append(path.endswith("last.pt.tmp"))
        return path.endswith("last.pt.tmp") and sum(written) == 2

    _fsync_fails(monkeypatch, when=second_last_pt)
    assert main(["train", "--data", digits_dir, "--out", str(out), *QUICK, "--epochs", "2", "--eval-subset", "50"]) == 2
    assert capsys.readouterr().err == (
        f"fastsglr: error: no space left on the device writing {out}/last.pt: free "
        f"space, then fastsglr train --resume {out} (the last good checkpoint is "
        f"kept)\n"
    )
    assert load_checkpoint(str(out / "last.pt"))["epoch"] == 1
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    monkeypatch.undo()
    assert main(["train", "--resume", str(out)]) == 0
    assert load_checkpoint(str(out / "final.pt"))["epoch"] == 2
