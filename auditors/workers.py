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

from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from typing import Any

from auditors.changes import ChangeCounts, ChangeTracker
from auditors.engine import Evaluator
from auditors.forking import Forked, processes_for
from auditors.sinks.base import FindingSink, SinkStats, abort_all, close_all, feed

CLUSTERS_PER_PROCESS = 2_000  # below this many clusters per process, forking costs more than it saves


def process_count(requested: int, clusters: int, sinks: list[FindingSink]) -> int:
    """How many processes evaluate: `requested` (0: one per CPU, as `processes_for`, with at least
    CLUSTERS_PER_PROCESS clusters each), never more than there are clusters; 1 where forking is unsafe or a sink
    cannot take parts."""
    if not all(hasattr(sink, "part") for sink in sinks):
        return 1
    wanted = processes_for(requested)
    return max(1, min(wanted, clusters // CLUSTERS_PER_PROCESS if requested == 0 else clusters))


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
    """Every finding (evaluated, marked against the previous run, carried forward) once through every sink; in one
    process that is share 0 of 1, then the tail, as with workers. If producing findings fails, every sink is
    aborted and the error propagates; a sink's own failure to close is its stats' error, not the others'."""
    workers: list[Forked] = []
    try:
        for index in range(1, processes):  # one at a time: if a fork fails, those started are stopped below
            workers.append(Forked.start(partial(_evaluate_share, evaluator, tracker, sinks, index, processes),
                                        f"worker process for share {index + 1} of {processes}"))
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
        abort_all(sinks)  # a sink's abort also removes the parts its workers left
        raise
    return close_all(sinks)


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
