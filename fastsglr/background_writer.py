"""Run-directory writes off the critical path: an epoch's checkpoints and metrics are written by a background thread
while the next epoch trains (serialising, hashing and fsyncing PreAct ResNet-18's checkpoint takes a few tenths of a
second, during which the GPU would otherwise idle).

The state is copied off the device synchronously, at the epoch boundary (``host_copy``: the next step changes the
tensors in place); only the serialisation, fsync and rename run in the thread. At most one job is in flight:
``submit`` waits for the previous one, and so does leaving the ``with`` block, normally or by an exception, so a run
never ends or stops with a write unfinished. A job's error (say, a full disk: a one-line UsageError) is raised, as it
is, by the next wait in the training thread. Every write is atomic (``files.atomic_file``), so a crash in the middle
of a job leaves the previous good file.
"""

import threading

import torch


def host_copy(obj):
    """A copy of ``obj`` (nested dicts, lists and tuples) with every tensor copied into host memory."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: host_copy(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [host_copy(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(host_copy(value) for value in obj)
    return obj


class BackgroundWriter:
    """Runs one job at a time in a background thread; ``wait`` joins it and raises what it raised."""

    def __init__(self):
        self._thread, self._error = None, None

    def submit(self, job):
        """Run ``job()`` in the background, after the previous job has finished (and raised, if it failed)."""
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(job,), name="fastsglr-writer")
        self._thread.start()

    def _run(self, job):
        try:
            job()
        except BaseException as exc:  # handed to the training thread by wait()
            self._error = exc

    def wait(self):
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.wait()
