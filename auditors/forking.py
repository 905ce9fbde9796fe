"""Work done in a forked copy of this process, its result sent back: the mechanism under `auditors.workers`
(evaluation) and the parallel snapshot load (`auditors.inputs`).

A fork shares the parent's memory copy-on-write, so a worker starts with everything already loaded; what it
sends back is pickled. A fork copies locks that other threads may hold, so nothing forks while the process
runs another thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


class WorkerFailed(RuntimeError):
    """A worker process raised or died; the message says which and why."""


def fork_allowed() -> bool:
    """This process can fork safely: the platform has fork and no other thread runs."""
    return hasattr(os, "fork") and threading.active_count() == 1


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


MAX_AUTO_PROCESSES = 8


def processes_for(requested: int) -> int:
    """How many processes may work at once: `requested`, or for 0 one per CPU this process may use (up to
    MAX_AUTO_PROCESSES); 1 where forking is unsafe."""
    if requested == 1 or not fork_allowed():
        return 1
    return requested if requested > 1 else min(usable_cpus(), MAX_AUTO_PROCESSES)


def _die_with(parent: int) -> None:
    """In a worker: the kernel kills it when the process that forked it dies, even by SIGKILL, so that no worker
    runs on, unseen, after its run (Linux; elsewhere the run stops its workers when it can)."""
    try:
        set_death_signal = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    set_death_signal(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the run died before the death signal was set
        os._exit(1)


_PR_SET_PDEATHSIG = 1


class Forked:
    """`work()` running in a forked child; `result()` waits for what it returned (or raises WorkerFailed)."""

    def __init__(self, pid: int, reader: int, what: str) -> None:
        self.pid, self.reader, self.what = pid, reader, what

    @classmethod
    def start(cls, work: Callable[[], Any], what: str) -> Forked:
        parent = os.getpid()
        reader, writer = os.pipe()
        try:
            pid = os.fork()
        except OSError:  # no process to be had (EAGAIN, ENOMEM): the caller's run fails, no descriptor left open
            os.close(reader)
            os.close(writer)
            raise
        if pid == 0:  # the child: never returns into the caller's code (its cleanup is the parent's)
            code = 1
            try:
                os.close(reader)
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the parent stops its workers
                _die_with(parent)
                try:
                    payload = pickle.dumps(("done", work()), protocol=pickle.HIGHEST_PROTOCOL)
                    code = 0
                except BaseException as exc:  # reported to the parent, which fails its run
                    frames = traceback.extract_tb(exc.__traceback__)
                    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" \
                        if frames else ""
                    payload = pickle.dumps(("failed", f"{type(exc).__name__}: {exc}{where}"))
                with os.fdopen(writer, "wb") as out:
                    out.write(payload)
            finally:
                os._exit(code)
        os.close(writer)
        return cls(pid, reader, what)

    def result(self) -> Any:
        reader, self.reader = self.reader, -1  # closed below, whatever happens: never closed twice
        with os.fdopen(reader, "rb") as incoming:
            payload = incoming.read()
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        try:
            message = pickle.loads(payload)
        except Exception:  # nothing, or cut short: the worker died before it had sent all of it
            why = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit code {os.waitstatus_to_exitcode(status)}")
            raise WorkerFailed(f"{self.what} ended without a result ({why})") from None
        if message[0] != "done":
            raise WorkerFailed(f"{self.what} failed: {message[1]}")
        return message[1]

    def stop(self) -> None:
        """Kill the child if it still runs (the parent failed and will not take its result)."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            self.pid = 0
        if self.reader >= 0:
            with contextlib.suppress(OSError):
                os.close(self.reader)
            self.reader = -1
