"""The one interface every destination of findings implements, and the fan-out that feeds them.

The evaluator's findings are encoded once (`auditors.findings.encode`) and handed, in batches, to every
configured sink: local files, the summary, Log Analytics, the evidence archive. No sink reads another's
output back.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from auditors.findings import EncodedFinding, Finding, encode

BATCH = 2000


@dataclass
class SinkStats:
    """What one sink did with the run's findings."""

    sink: str
    rows: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"sink": self.sink, "rows": self.rows, "bytes": self.bytes, "errors": self.errors[:20], **self.detail}


class FindingSink(Protocol):
    name: str

    def write(self, batch: list[EncodedFinding]) -> None:
        """Take a batch of findings (their JSON already encoded)."""

    def close(self) -> SinkStats:
        """Every finding was written: finish (flush, commit, wait for uploads) and report."""

    def abort(self) -> None:
        """The run failed before all findings were produced: discard what is partial, keep what was there."""


class SinkPart(Protocol):
    """What a worker process writes a share of the findings to (see `auditors.workers`)."""

    def write(self, batch: list[EncodedFinding]) -> None: ...

    def finish(self) -> Any:
        """The share is written: what the sink needs to take it over (small and picklable)."""

    def abort(self) -> None: ...


class PartitionedSink(FindingSink, Protocol):
    """A sink that can take findings evaluated in other processes: each process writes a part, and the sink
    takes the parts over in order, so the result is what one process writing everything would have made."""

    def part(self, index: int) -> SinkPart:
        """Called in a worker process: a part for piece `index` of the work."""

    def absorb(self, finished: Any) -> None:
        """In the run's own process, parts in order: take over what a part's `finish` returned. (`abort` also
        removes what parts may have left, a worker killed mid-write included.)"""

    def discard(self, finished: Any) -> None:
        """A finished part that is not taken over (its piece was also evaluated elsewhere): remove what it left."""


def encoded_batches(findings: Iterable[Finding], size: int = BATCH) -> Iterator[list[EncodedFinding]]:
    batch: list[EncodedFinding] = []
    for finding in findings:
        batch.append(encode(finding))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def feed(findings: Iterable[Finding], sinks: list) -> None:
    """Every finding, encoded once, in batches to every sink (or part of a sink)."""
    # Findings, their contexts and batches hold no reference cycles: the cyclic collector would only rescan each
    # batch while it lives (about 7 % of a large scan). What a rule error might leave is collected at the end.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for batch in encoded_batches(findings):
            for sink in sinks:
                sink.write(batch)
    finally:
        if collecting:
            gc.enable()


def abort_all(sinks: list) -> None:
    for sink in sinks:
        sink.abort()


def close_all(sinks: list[FindingSink]) -> dict[str, SinkStats]:
    stats = {}
    for sink in sinks:
        try:
            stats[sink.name] = sink.close()
        except Exception as exc:  # one destination failing must not hide what the others did
            stats[sink.name] = SinkStats(sink.name, errors=[f"{sink.name}: {type(exc).__name__}: {exc}"])
    return stats
