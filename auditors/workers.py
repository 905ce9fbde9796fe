"""Evaluate and deliver in several processes: pieces of the clusters shared out as they go, the same result as
one process.

After the inventory is loaded, the run forks worker processes (they share its memory, copy-on-write). The
clusters are cut into pieces of about equal work (the registries go with the first). The run's own process
takes pieces from the front and evaluates them straight into its sinks; the workers take pieces from the back
and evaluate each into *parts* of the sinks (its own part files, its own summary), reporting what they did. When
they meet (`auditors.forking.Claims`), the run's process takes the workers' parts over in piece order, adds the
findings made after every other (exemptions, carried-forward findings) and closes the sinks. Findings, files and
counts are the same, byte for byte, as a run in one process: the pieces are contiguous and taken in order. Taken
as they go rather than dealt out beforehand, the pieces keep every process busy to the end even when one of them
is slowed (on a shared machine the run's process finished up to 3 s after its one worker with fixed shares).

Used only where it is safe and pays: `os.fork` exists, the process has no other thread (a fork copies locks
another thread may hold), every sink can take parts (local files and the summary; Log Analytics, the evidence
archive and reports take findings in one process), and the estate is large enough. A worker that fails or dies
fails the run like any evaluation error: every sink is aborted, the previous output stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from typing import Any

from auditors.changes import ChangeCounts, ChangeTracker
from auditors.engine import Evaluator
from auditors.findings import Finding
from auditors.forking import Claims, Forked, processes_for
from auditors.sinks.base import FindingSink, SinkStats, abort_all, close_all, feed

CLUSTERS_PER_PROCESS = 2_000  # below this many clusters per process, forking costs more than it saves


def process_count(requested: int, clusters: int, sinks: list[FindingSink]) -> int:
    """How many processes evaluate: `requested` (0: one per CPU, as `processes_for`, with at least
    CLUSTERS_PER_PROCESS clusters each), never more than there are clusters; 1 where forking is unsafe or a sink
    cannot take parts."""
    if not all(hasattr(sink, "part") and hasattr(sink, "discard") for sink in sinks):
        return 1
    wanted = processes_for(requested)
    return max(1, min(wanted, clusters // CLUSTERS_PER_PROCESS if requested == 0 else clusters))


# Pieces per process: enough that the last one to finish waits for little (a piece is 1/32 of a process's work),
# few enough that parts and their results stay cheap.
PIECES_PER_PROCESS = 32


@dataclass
class PieceDone:
    """What a worker did with one piece, sent back to the run's process."""

    piece: int
    parts: list[Any]  # each sink part's `finish()`, in the order of the sinks
    pairs: int = 0
    unpaired_clusters: int = 0
    changes: ChangeCounts = field(default_factory=ChangeCounts)
    seen: list[str] = field(default_factory=list)  # finding ids found in the previous run
    exemption_matches: tuple[int, ...] = ()


def evaluate_and_deliver(evaluator: Evaluator, tracker: ChangeTracker, sinks: list[FindingSink],
                         processes: int = 1) -> dict[str, SinkStats]:
    """Every finding (evaluated, marked against the previous run, carried forward) once through every sink; in one
    process that is one piece, then the tail, as with workers. If producing findings fails, every sink is
    aborted and the error propagates; a sink's own failure to close is its stats' error, not the others'."""
    # No more pieces than clusters (a piece is at least one), none at all in one process.
    clusters = len(evaluator.inventory.clusters)
    claims = Claims(max(processes, min(PIECES_PER_PROCESS * processes, clusters))) if processes > 1 else None
    workers: list[Forked] = []
    try:
        if claims is not None:
            evaluator.env.prepare()
        for index in range(1, processes):  # one at a time: if a fork fails, those started are stopped below
            workers.append(Forked.start(partial(_evaluate_pieces, evaluator, tracker, sinks, claims),
                                        f"worker process {index} of {processes - 1}"))
        feed(tracker.mark(_from_front(evaluator, claims, processes)), sinks)
        done = sorted((piece for worker in workers for piece in worker.result()), key=lambda piece: piece.piece)
        for piece in done:
            if piece.piece < claims.mine:  # taken by both at the same moment: the run's own copy is written
                for sink, part in zip(sinks, piece.parts, strict=True):
                    sink.discard(part)
                continue
            for sink, part in zip(sinks, piece.parts, strict=True):
                sink.absorb(part)
            evaluator.pair_count += piece.pairs
            evaluator.unpaired_clusters += piece.unpaired_clusters
            tracker.absorb(piece.changes, piece.seen)
            if evaluator.exemptions is not None:
                evaluator.exemptions.add_matches(piece.exemption_matches)
        feed(chain(tracker.mark(evaluator.tail()), tracker.carried_forward()), sinks)
    except BaseException:
        for worker in workers:
            worker.stop()
        abort_all(sinks)  # a sink's abort also removes the parts its workers left
        raise
    finally:
        if claims is not None:
            claims.close()
    return close_all(sinks)


def _from_front(evaluator: Evaluator, claims: Claims | None, processes: int) -> Iterator[Finding]:
    """In the run's process: the findings of the pieces it takes, in order, with progress (in one process, every
    finding: one piece)."""
    if claims is None:
        yield from evaluator.share(0, 1)
        return
    last_report = time.monotonic()
    while (piece := claims.from_front()) is not None:
        yield from evaluator.share(piece, claims.count)
        if evaluator.progress and time.monotonic() - last_report > 2:
            last_report = time.monotonic()
            evaluator.progress(f"evaluated or under way: {claims.taken()}/{claims.count} pieces of the clusters, in "
                               f"{processes} processes")


def _evaluate_pieces(evaluator: Evaluator, tracker: ChangeTracker, sinks: list, claims: Claims) -> list[PieceDone]:
    """In a worker: pieces from the back into parts of the sinks (copies of the run's objects, made by the fork).
    If it fails, the run aborts its sinks, which removes every part a worker left."""
    done: list[PieceDone] = []
    while (piece := claims.from_back()) is not None:
        done.append(_evaluate_piece(evaluator, tracker, sinks, claims, piece))
    return done


def _evaluate_piece(evaluator: Evaluator, tracker: ChangeTracker, sinks: list, claims: Claims,
                    piece: int) -> PieceDone:
    pairs, unpaired = evaluator.pair_count, evaluator.unpaired_clusters
    matches = evaluator.exemptions.match_counts if evaluator.exemptions is not None else ()
    tracker.counts = ChangeCounts()
    parts = [sink.part(piece) for sink in sinks]
    seen: list[str] = []
    feed(tracker.mark(evaluator.share(piece, claims.count), seen), parts)
    after = evaluator.exemptions.match_counts if evaluator.exemptions is not None else ()
    return PieceDone(piece, [part.finish() for part in parts], evaluator.pair_count - pairs,
                     evaluator.unpaired_clusters - unpaired, tracker.counts, seen,
                     tuple(b - a for a, b in zip(matches, after, strict=True)))
