"""A run's per-epoch scalars as TensorBoard events in its run directory (``events.out.tfevents.*``), so that
`tensorboard --logdir` shows runs side by side (docs/training.md).

metrics.jsonl stays the source of truth: the events are a copy of its rows, one scalar per numeric column (``tag``
names it), the epoch as the step, written by the background writer right after the epoch's metrics.jsonl, off the
training step. TensorBoard stores a scalar as float32: an event equals its metrics.jsonl value rounded to float32.

Each time a run opens (a start or a resume) it writes a new events file, as TensorBoard expects (it reads a
directory's files in order). A resumed run first writes the rows of its history that no events file holds yet (a run
stopped between its last.pt and its events); where the events are ahead of the history (a resume that fell back to
last.prev.pt) it writes a SessionLog START at the resumed epoch, TensorFlow's own restart marker, after which
TensorBoard drops the older points from that step on. Without the ``tensorboard`` package there are no events, and
the run trains the same (``open_events`` returns None).
"""

import glob
import math
import os
import time

EVENTS_GLOB = "events.out.tfevents.*"
# metrics.jsonl column prefix -> TensorBoard section; other columns go to "run/".
SECTIONS = ("train", "test")


def tag(column: str) -> str:
    """The TensorBoard tag of a metrics.jsonl column: train_adv_acc -> train/adv_acc, lr -> run/lr."""
    section, _, rest = column.partition("_")
    return f"{section}/{rest}" if section in SECTIONS and rest else f"run/{column}"


def scalars(row: dict) -> dict:
    """A metrics.jsonl row's scalars: tag -> value, for every numeric column but the step (``epoch``); a value
    that is not finite (no label noise: no corrupted portion) is null in metrics.jsonl and no point here."""
    return {
        tag(key): float(value)
        for key, value in row.items()
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def remove_events(run_dir):
    """A fresh start's directory keeps no events of an earlier run."""
    for path in glob.glob(os.path.join(run_dir, EVENTS_GLOB)):
        os.remove(path)


def _written_steps(run_dir) -> set:
    """The steps (epochs) that the run directory's events files hold scalars for."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = set()
    for path in sorted(glob.glob(os.path.join(run_dir, EVENTS_GLOB))):
        steps.update(event.step for event in EventFileLoader(path).Load() if event.summary.value)
    return steps


class EventLog:
    """The events file of one opening of a run; ``add`` writes an epoch's row."""

    def __init__(self, run_dir, history):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._pb, self._summary = event_pb2, summary_pb2.Summary
        written = _written_steps(run_dir)
        self._writer = EventFileWriter(run_dir)
        if written and max(written) > len(history):
            self._event(step=len(history) + 1, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
        for row in history:
            if row["epoch"] not in written:
                self.add(row)

    def _event(self, **fields):
        self._writer.add_event(self._pb.Event(wall_time=time.time(), **fields))

    def add(self, row: dict):
        values = [self._summary.Value(tag=t, simple_value=v) for t, v in scalars(row).items()]
        self._event(step=row["epoch"], summary=self._summary(value=values))
        self._writer.flush()

    def close(self):
        self._writer.close()


def open_events(run_dir, history, log) -> "EventLog | None":
    """The run's event log (``history``: the rows it has already, a resumed run's), or None without tensorboard."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:  # an extra: a bare GPU box trains without it
        log("tensorboard is not installed: no TensorBoard events (pip install tensorboard)")
        return None
    return EventLog(run_dir, history)
