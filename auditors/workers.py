"""Evaluate and deliver in several processes: one share of the clusters each, the same result as one process.

After the inventory is loaded, the run forks worker processes (they share its memory, copy-on-write). Share 0
(the registries and the first run of clusters) is evaluated by the run's own process straight into its sinks;
worker `i` evaluates share `i` into *parts* of the sinks (its own part files, its own summary) and reports what
it did. The run's process then takes the parts over in share order, adds the findings made after every other
(exemptions, carried-forward findings) and closes the sinks. Findings, files and counts are the same, byte for
byte, as a run in one process: the shares are contiguous and taken in order.

Used only where it is safe and pays: `os.fork` exists, the process has no other thread (a fork copies locks
another thread may hold), every sink can take parts (local files and the summary; Log Analytics, the evidence
archive and reports take findings in one process), and the estate is large enough. A worker that fails or dies
fails the run like any evaluation error: every sink is aborted, the previous output stays.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
import traceback
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from auditors.changes import ChangeCounts, ChangeTracker
from auditors.engine import Evaluator
from auditors.sinks.base import FindingSink, SinkStats, abort_all, close_all, deliver, feed

MAX_AUTO_PROCESSES = 8
CLUSTERS_PER_PROCESS = 2_000  # below this many clusters per process, forking costs more than it saves


class WorkerFailed(RuntimeError):
    """A worker process raised or died; the message says which share and why."""


def process_count(requested: int, clusters: int, sinks: list[FindingSink]) -> int:
    """How many processes evaluate: `requested` (0: one per CPU this process may use, up to
    MAX_AUTO_PROCESSES, and no more than CLUSTERS_PER_PROCESS clusters each), 1 where forking is unsafe or
    a sink cannot take parts."""
    if requested == 1 or not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    if not all(hasattr(sink, "part") for sink in sinks):
        return 1
    if requested == 0:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(usable, MAX_AUTO_PROCESSES, clusters // CLUSTERS_PER_PROCESS))
    return max(1, min(requested, clusters))


@dataclass
class ShareDone:
    """What a worker did with its share, sent back to the run's process."""

    parts: list[Any]  # each sink part's `finish()`, in the order of the sinks
    pairs: int = 0
    unpaired_clusters: int = 0
    changes: ChangeCounts = field(default_factory=ChangeCounts)
    seen: list[str] = field(default_factory=list)  # finding ids found in the previous run
    exemption_matches: tuple[int, ...] = ()


def evaluate_and_deliver(evaluator: Evaluator, tracker: ChangeTracker, sinks: list[FindingSink],
                         processes: int = 1) -> dict[str, SinkStats]:
    """Every finding (evaluated, marked against the previous run, carried forward) once through every sink."""
    if processes <= 1:
        return deliver(tracker.annotate(evaluator.run()), sinks)
    workers: list[_Worker] = []
    try:
        workers = [_Worker.start(evaluator, tracker, sinks, index, processes) for index in range(1, processes)]
        feed(tracker.mark(evaluator.share(0, processes)), sinks)
        for worker in workers:
            done = worker.result()
            for sink, part in zip(sinks, done.parts, strict=True):
                sink.absorb(part)
            evaluator.pair_count += done.pairs
            evaluator.unpaired_clusters += done.unpaired_clusters
            tracker.absorb(done.changes, done.seen)
            if evaluator.exemptions is not None:
                evaluator.exemptions.add_matches(done.exemption_matches)
        feed(chain(tracker.mark(evaluator.tail()), tracker.carried_forward()), sinks)
    except BaseException:
        for worker in workers:
            worker.stop()
        abort_all(sinks)
        for sink in sinks:
            sink.discard_parts()
        raise
    return close_all(sinks)


class _Worker:
    def __init__(self, pid: int, reader: int, index: int, shares: int) -> None:
        self.pid, self.reader, self.index, self.shares = pid, reader, index, shares

    @classmethod
    def start(cls, evaluator: Evaluator, tracker: ChangeTracker, sinks: list, index: int, shares: int) -> _Worker:
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the caller's code (its cleanup is the run's own)
            code = 1
            try:
                os.close(reader)
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the run's process stops the workers
                try:
                    payload = pickle.dumps(("done", _evaluate_share(evaluator, tracker, sinks, index, shares)))
                    code = 0
                except BaseException as exc:  # reported to the run's process, which fails the run
                    frames = traceback.extract_tb(exc.__traceback__)
                    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" \
                        if frames else ""
                    payload = pickle.dumps(("failed", f"{type(exc).__name__}: {exc}{where}"))
                with os.fdopen(writer, "wb") as out:
                    out.write(payload)
            finally:
                os._exit(code)
        os.close(writer)
        return cls(pid, reader, index, shares)

    def result(self) -> ShareDone:
        with os.fdopen(self.reader, "rb") as incoming:
            payload = incoming.read()
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        what = f"worker process for share {self.index + 1} of {self.shares}"
        if not payload:
            why = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit code {os.waitstatus_to_exitcode(status)}")
            raise WorkerFailed(f"{what} ended without a result ({why})")
        message = pickle.loads(payload)
        if message[0] != "done":
            raise WorkerFailed(f"{what} failed: {message[1]}")
        return message[1]

    def stop(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            self.pid = 0
            with contextlib.suppress(OSError):
                os.close(self.reader)


def _evaluate_share(evaluator: Evaluator, tracker: ChangeTracker, sinks: list, index: int,
                    shares: int) -> ShareDone:
    """In the worker: its share into parts of the sinks (copies of the run's objects, made by the fork)."""
    evaluator.progress = None  # the run's process reports progress
    pairs, unpaired = evaluator.pair_count, evaluator.unpaired_clusters
    matches = evaluator.exemptions.match_counts if evaluator.exemptions is not None else ()
    tracker.counts = ChangeCounts()
    parts = [sink.part(index) for sink in sinks]
    seen: list[str] = []
    try:
        feed(tracker.mark(evaluator.share(index, shares), seen), parts)
    except BaseException:
        abort_all(parts)
        raise
    after = evaluator.exemptions.match_counts if evaluator.exemptions is not None else ()
    return ShareDone([part.finish() for part in parts], evaluator.pair_count - pairs,
                     evaluator.unpaired_clusters - unpaired, tracker.counts, seen,
                     tuple(b - a for a, b in zip(matches, after, strict=True)))
