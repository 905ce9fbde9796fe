"""Work done in a forked copy of this process, its result sent back: the mechanism under `auditors.workers`
(evaluation) and the parallel snapshot load (`auditors.inputs`).

A fork shares the parent's memory copy-on-write, so a worker starts with everything already loaded; what it
sends back is pickled. A fork copies locks that other threads may hold, so nothing forks while the process
runs another thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import pickle
import signal
import struct
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
    """`work()` running in a forked child; `result()` waits for what it returned (or raises WorkerFailed). Work
    started with `sends=True` is called as `work(send)` and may `send(item)` as it goes: the parent takes the
    items as they come (`received`), before the result. Everything travels as length-prefixed pickles on a pipe."""

    def __init__(self, pid: int, reader: int, what: str) -> None:
        self.pid, self.reader, self.what = pid, reader, what
        self._incoming = bytearray()
        self._items: list[Any] = []
        self._outcome: tuple[str, Any] | None = None

    @classmethod
    def start(cls, work: Callable[..., Any], what: str, *, sends: bool = False) -> Forked:
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
                with os.fdopen(writer, "wb") as out:
                    def send(item: Any) -> None:
                        out.write(_frame(("item", item)))
                        out.flush()
                    try:
                        last = _frame(("done", work(send) if sends else work()))  # a result that cannot be pickled
                        code = 0                                                  # fails the work like an error
                    except BaseException as exc:  # reported to the parent, which fails its run
                        frames = traceback.extract_tb(exc.__traceback__)
                        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" \
                            if frames else ""
                        last = _frame(("failed", f"{type(exc).__name__}: {exc}{where}"))
                    out.write(last)
            finally:
                os._exit(code)
        os.close(writer)
        return cls(pid, reader, what)

    def received(self) -> list[Any]:
        """The items sent since the last call, without waiting for more (after `result`: every one left)."""
        if self.reader >= 0:
            os.set_blocking(self.reader, False)
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(self.reader, 1 << 20):
                    self._incoming += chunk
            self._unframe()
        items, self._items = self._items, []
        return items

    def result(self) -> Any:
        reader, self.reader = self.reader, -1  # closed below, whatever happens: never closed twice
        try:
            os.set_blocking(reader, True)
            while chunk := os.read(reader, 1 << 20):
                self._incoming += chunk
        finally:
            os.close(reader)
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        self._unframe()
        if self._outcome is None:  # nothing, or cut short: the worker died before it had sent all of it
            why = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit code {os.waitstatus_to_exitcode(status)}")
            raise WorkerFailed(f"{self.what} ended without a result ({why})")
        if self._outcome[0] != "done":
            raise WorkerFailed(f"{self.what} failed: {self._outcome[1]}")
        return self._outcome[1]

    def _unframe(self) -> None:
        """Complete messages out of what has arrived; a message cut short (the worker died) stays unread."""
        data, start = self._incoming, 0
        while len(data) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(data, start)
            end = start + _LENGTH.size + length
            if len(data) < end:
                break
            try:
                kind, value = pickle.loads(data[start + _LENGTH.size:end])
            except Exception:  # garbage: only a dying worker sends that
                break
            start = end
            if kind == "item":
                self._items.append(value)
            else:
                self._outcome = (kind, value)
        del data[:start]

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


_LENGTH = struct.Struct("<Q")


def _frame(message: tuple[str, Any]) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


class Claims:
    """Pieces 0..count-1 of a job, taken as they go by the processes forked after this is made: the run's process
    from the front (so what it does is a prefix, which it can write straight out), the workers from the back,
    until they meet. A process slowed by anything (another program on the machine, pieces heavier than they
    looked) does fewer, and all finish within a piece of each other.

    No lock (a worker killed while holding one would hang the run): a flag per piece in memory shared with the
    workers, and the workers' pieces handed out by a pipe (a read of a few bytes from a pipe is atomic). A piece
    the run's process and a worker take at the same moment is done by both; the run keeps its own (`mine`)."""

    _RUN, _WORKER = 1, 2
    MAX_PIECES = 4096  # their numbers fit in a pipe's buffer before any worker reads

    def __init__(self, count: int) -> None:
        if not 0 < count <= self.MAX_PIECES:
            raise ValueError(f"{count} pieces: between 1 and {self.MAX_PIECES}")
        self.count = count
        self._taken = mmap.mmap(-1, count)  # anonymous and shared: the workers see the run's flags and it theirs
        self._handed_out, handing = os.pipe()
        os.write(handing, b"".join(piece.to_bytes(2, "little") for piece in reversed(range(count))))
        os.close(handing)
        os.set_blocking(self._handed_out, False)
        self.mine = 0  # in the run's process: it took pieces [0, mine)

    def from_front(self) -> int | None:
        """In the run's process: the next piece, or None when the workers have it (or there is none left)."""
        piece = self.mine
        if piece >= self.count or self._taken[piece]:
            return None
        self._taken[piece] = self._RUN
        self.mine = piece + 1
        return piece

    def from_back(self) -> int | None:
        """In a worker: the last piece nobody has taken, or None when the run's process has reached it."""
        try:
            number = os.read(self._handed_out, 2)
        except BlockingIOError:  # every piece handed out
            return None
        if len(number) < 2:
            return None
        piece = int.from_bytes(number, "little")
        if self._taken[piece] == self._RUN:
            return None
        self._taken[piece] = self._WORKER
        return piece

    def taken(self) -> int:
        """How many pieces have been taken so far (for progress)."""
        return self.count - self._taken[:].count(0)

    def close(self) -> None:
        """Once the workers are done (closing twice is harmless: the descriptor is not closed again, whatever
        now has its number)."""
        if self._handed_out >= 0:
            with contextlib.suppress(OSError):
                os.close(self._handed_out)
            self._handed_out = -1
        self._taken.close()
