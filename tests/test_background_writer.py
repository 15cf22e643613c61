"""The background writer: the state it writes is a snapshot taken at submit time, one job runs at a time, submit
returns while the job runs, and a job's error is raised as it is by the next wait (and on leaving the block)."""

import threading

import pytest
import torch

from fastsglr.background_writer import BackgroundWriter, host_copy
from fastsglr.errors import UsageError


def test_host_copy_is_a_snapshot():
    live = {"w": torch.randn(5), "rows": [{"acc": 71.5}], "pair": (torch.randn(2), 3), "lr": 0.1}
    w, pair = live["w"].clone(), live["pair"][0].clone()
    copy = host_copy(live)
    live["w"].add_(1.0)  # what the next training step does to the weights
    live["pair"][0].mul_(2.0)
    live["rows"][0]["acc"] = 12.0
    live["rows"].append({"acc": 80.0})  # the tracker's next row
    assert torch.equal(copy["w"], w) and torch.equal(copy["pair"][0], pair) and copy["pair"][1] == 3
    assert copy["rows"] == [{"acc": 71.5}] and copy["lr"] == 0.1
    assert copy["w"].device.type == "cpu" and isinstance(copy["pair"], tuple)


def test_submit_returns_while_the_job_runs_and_jobs_never_overlap():
    release, log = threading.Event(), []

    def first():
        log.append("first starts")
        release.wait(timeout=30)
        log.append("first ends")

    writer = BackgroundWriter()
    writer.submit(first)
    assert not release.is_set()  # submit came back while the first job is still blocked
    threading.Timer(0.2, release.set).start()
    writer.submit(lambda: log.append("second starts"))  # waits for the first
    writer.wait()
    assert log == ["first starts", "first ends", "second starts"]


def test_a_job_error_surfaces_at_the_next_wait_as_it_is():
    error = UsageError("no space left on the device writing run/last.pt: free space, then fastsglr train --resume run")

    def fails():
        raise error

    writer = BackgroundWriter()
    writer.submit(fails)
    with pytest.raises(UsageError) as raised:
        writer.wait()
    assert raised.value is error
    writer.wait()  # reported once
    with pytest.raises(UsageError):  # the next submit waits for the failed job first
        writer.submit(fails)
        writer.submit(lambda: None)
    with pytest.raises(UsageError) as raised:  # and so does leaving the block, also after an exception
        with BackgroundWriter() as writer:
            writer.submit(fails)
    assert str(raised.value) == str(error)
