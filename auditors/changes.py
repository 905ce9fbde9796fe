"""Changes since the previous run, and what this run could not see.

Each finding gets `Change` and `FirstSeen` against the previous run's findings (the local output folder's, else
the evidence archive's for the same scope):

- `New`: the previous run had no such finding, or it was Pass or NotApplicable and is now Fail or Unknown (a new
  problem). `FirstSeen` is this run.
- `Changed`: any other change of status (Fail to Pass is a fix; Fail to Unknown, Unknown to Fail, ...).
  `FirstSeen` is this run.
- `Unchanged`: same status; `FirstSeen` carries over.

A previous finding this run did not produce, about a subscription whose data this run could not collect, is
carried forward as Unknown with `LastKnownStatus` and `LastSeen`, so a failed query never makes a Fail vanish.
A previous finding that is simply gone (the resource or the pair no longer exists) is not repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from auditors.arm import subscription_of
from auditors.findings import Finding, expand, read_rows

PROBLEMS = frozenset({"Fail", "Unknown"})
FIXED = frozenset({"Pass", "NotApplicable"})
NEW, CHANGED, UNCHANGED = "New", "Changed", "Unchanged"
_SEPARATOR = "\x1f"


@dataclass
class PreviousRun:
    """The previous run's findings, as one file copied into this run's work folder (so a concurrent run that
    replaces the original cannot change what this run compares against)."""

    path: Path
    origin: str  # where it was read from, for the run's messages
    statuses: dict[str, str] = field(default_factory=dict)  # FindingId -> "Status\x1fFirstSeen" (interned)
    run_id: str = ""

    @classmethod
    def read(cls, path: Path, origin: str) -> PreviousRun:
        previous = cls(path, origin)
        shared: dict[str, str] = {}
        for record in previous.records():
            finding_id = record.get("FindingId")
            status = record.get("Status")
            if _carried(record):  # not looked at in that run: what counts is what was last seen
                status = record.get("LastKnownStatus")
            if not isinstance(finding_id, str) or not isinstance(status, str):
                continue
            first = record.get("FirstSeen") or record.get("TimeGenerated") or ""
            value = f"{status}{_SEPARATOR}{first}"
            previous.statuses[finding_id] = shared.setdefault(value, value)  # a few distinct values, shared
            previous.run_id = previous.run_id or str(record.get("RunId") or "")
        return previous

    def records(self) -> Iterator[dict]:
        """The previous findings as written (ids, status, times and evidence are always there); a damaged line:
        its finding counts as new."""
        return read_rows(self.path, skip_damaged=True)


@dataclass
class ChangeCounts:
    new: int = 0  # Fail or Unknown, not exempted, and New
    fixed: int = 0  # Fail in the previous run, Pass or NotApplicable now
    carried_forward: int = 0


class ChangeTracker:
    """Annotates findings as they stream past; after the last one, adds the carried-forward findings."""

    def __init__(self, previous: PreviousRun | None, *, run_id: str, time_generated: str,
                 not_collected: Callable[[str], str | None]) -> None:
        """`not_collected(subscription_id)`: why this run has no data for that subscription, or None."""
        self.previous = previous
        self.run_id, self.time_generated = run_id, time_generated
        self.not_collected = not_collected
        self.counts = ChangeCounts()

    def annotate(self, findings: Iterable[Finding]) -> Iterator[Finding]:
        yield from self.mark(findings)
        yield from self.carried_forward()

    def mark(self, findings: Iterable[Finding], seen: list[str] | None = None) -> Iterator[Finding]:
        """Change and FirstSeen of each finding; `seen` collects the ids found in the previous run (a worker
        process's share: the run's own tracker then `absorb`s them)."""
        statuses = self.previous.statuses if self.previous else {}
        for finding in findings:
            before = statuses.pop(finding.FindingId, None)
            if before is not None and seen is not None:
                seen.append(finding.FindingId)
            self._mark(finding, before)
            yield finding

    def absorb(self, counts: ChangeCounts, seen: list[str]) -> None:
        """What a worker process's tracker did with its share."""
        self.counts.new += counts.new
        self.counts.fixed += counts.fixed
        statuses = self.previous.statuses if self.previous else {}
        for finding_id in seen:
            statuses.pop(finding_id, None)

    def carried_forward(self) -> Iterator[Finding]:
        """After the last finding: the previous run's findings not seen, where this run could not look."""
        if self.previous is not None and self.previous.statuses:
            yield from self._carried_forward(self.previous.statuses)

    def _mark(self, finding: Finding, before: str | None, *, carried: bool = False) -> None:
        status = finding.Status
        if before is None:
            finding.Change, finding.FirstSeen = NEW, self.time_generated
        else:
            previous_status, _, first_seen = before.partition(_SEPARATOR)
            if previous_status == status:
                finding.Change, finding.FirstSeen = UNCHANGED, first_seen or self.time_generated
            else:
                new_problem = status in PROBLEMS and previous_status not in PROBLEMS and not carried
                finding.Change, finding.FirstSeen = (NEW if new_problem else CHANGED), self.time_generated
                if previous_status == "Fail" and status in FIXED:
                    self.counts.fixed += 1
        if finding.Change == NEW and status in PROBLEMS and not finding.Exempted and not carried:
            self.counts.new += 1  # a carried-forward Unknown is not a new problem: nobody looked

    def _not_collected(self, record: dict) -> str | None:
        for subscription in _subscriptions_of(record) or [""]:
            why = self.not_collected(subscription)
            if why is not None:
                return why
        return None

    def _carried_forward(self, missing: dict[str, str]) -> Iterator[Finding]:
        """Previous findings this run did not produce, for subscriptions it could not collect: Unknown, with
        what was last known."""
        for record in self.previous.records():
            finding_id = record.get("FindingId")
            if finding_id not in missing:
                continue
            why = self._not_collected(record)
            if why is None:
                continue  # gone from a subscription this run saw whole: the resource or pair no longer exists
            del missing[finding_id]
            finding = _finding_of(record)
            last_status = (record.get("LastKnownStatus") if _carried(record) else None) or finding.Status
            last_seen = (record.get("LastSeen") if _carried(record) else None) or record.get("TimeGenerated")
            first_seen = record.get("FirstSeen") or last_seen
            finding.Message = (f"Not evaluated in this run: {why}. Last known: {last_status} on {last_seen}: "
                               f"{record.get('Message', '')}")[:4000]
            finding.Evidence = {**(finding.Evidence or {}), "carriedForward": True, "notCollected": why}
            finding.LastKnownStatus, finding.LastSeen = last_status, last_seen
            before = f"{record.get('Status')}{_SEPARATOR}{first_seen}"  # carried again: Unchanged
            finding.Status, finding.Remediation = "Unknown", ""
            finding.RunId, finding.TimeGenerated = self.run_id, self.time_generated
            self._mark(finding, before, carried=True)
            finding.FirstSeen = first_seen  # nobody looked: when it first had its last known status still holds
            self.counts.carried_forward += 1
            yield finding


def _subscriptions_of(record: dict) -> list[str]:
    """The subscriptions a finding's data came from: its own, and its cluster's, registry's and resource's."""
    def text(name: str) -> str:
        value = record.get(name)
        return value if isinstance(value, str) else ""

    found = [text("SubscriptionId")] + [subscription_of(text(name)) for name in ("ClusterId", "RegistryId",
                                                                                  "ResourceId")]
    return list(dict.fromkeys(s for s in found if s))


def _carried(record: dict) -> bool:
    evidence = record.get("Evidence")
    return isinstance(evidence, dict) and evidence.get("carriedForward") is True


def _finding_of(record: dict) -> Finding:
    values = expand(record)
    values["Controls"] = list(values["Controls"] or [])
    values["Evidence"] = values["Evidence"] if isinstance(values["Evidence"], dict) else {}
    values["Exempted"] = bool(values["Exempted"])
    return Finding(**values)
