"""SIGINT / SIGTERM (and SIGHUP, unless `nohup` ignores it) ask a run to stop after the current step, so that it
can write a mid-epoch last.pt and exit.

A second SIGINT (Ctrl-C twice) stops at once, with the last epoch's last.pt. Outside a run's loop (prepare, eval,
the set-up of a run) these signals stop at once (``stop_at_once``): every file is written whole or not at all, so
there is nothing to finish. Under torchrun every rank must stop
after the same step (DDP's collectives would otherwise wait forever), so the ranks agree on the flag after each
step with a tiny all-reduce on the CPU (a gloo group): it syncs the hosts, never the GPU.
"""

import contextlib
import signal
import threading

import torch
import torch.distributed as dist

from .distributed import World

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal closed


@contextlib.contextmanager
def signals_to(handler):
    """``handler`` for SIGNALS within the block, the previous handlers after it; in the main thread only, where
    Python delivers signals (elsewhere nothing changes). A SIGHUP that is ignored stays ignored: that is what
    `nohup` asked for."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {
            s: signal.signal(s, handler)
            for s in SIGNALS
            if not (s == signal.SIGHUP and signal.getsignal(s) is signal.SIG_IGN)
        }
    try:
        yield
    finally:
        for s, earlier in previous.items():
            signal.signal(s, earlier)


class StoppedBySignal(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the program is (like Python's own KeyboardInterrupt, which it extends, so
    that nothing catching ``Exception`` swallows it), with the signal's number for the exit code."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_at_once(signum, frame):
    """The handler of both signals outside a run's loop."""
    raise StoppedBySignal(signum)


class GracefulStop:
    def __init__(self, world: World, log=print):
        self.world, self.log = world, log
        self.signum = None
        self.group = dist.new_group(backend="gloo") if world.launched else None
        self._handled = signals_to(self._handle)

    def __enter__(self):
        self._handled.__enter__()
        return self

    def __exit__(self, *exc):
        self._handled.__exit__(*exc)

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise StoppedBySignal(signum)
        self.signum = signum
        # Only a second SIGINT stops at once; a SIGTERM (kill, a scheduler) or SIGHUP came from no keyboard.
        at_once = " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""
        self.log(f"{signal.Signals(signum).name}: stopping after this step{at_once}")

    def requested(self) -> int:
        """The signal to stop for (0: go on), agreed by every rank."""
        if self.group is None:
            return self.signum or 0
        flag = torch.tensor([self.signum or 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return int(flag)
