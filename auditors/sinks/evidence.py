"""Tamper-evident evidence archive: one folder per run, every object listed with its SHA-256 in a manifest.

Layout in the evidence container (or local directory): `YYYY/MM/DD/<runId>/` holding `snapshot.jsonl.gz`
(the rows the run evaluated), `findings.jsonl.gz` (every finding, full values), `summary.json` (the run
record), `rules.json` (the rule catalog) and `manifest.json`. Objects are created once and never
overwritten; the container's time-based immutability policy (infrastructure) keeps them that way.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from auditors import __version__
from auditors.findings import FINDING_FIELDS, EncodedFinding
from auditors.rules import catalog_document
from auditors.sinks.base import SinkStats
from auditors.sinks.store import ObjectMissing, ObjectStore

MANIFEST = "manifest.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EvidenceSink:
    """The run's findings, gzip JSON Lines, gathered for the archive as they are produced."""

    name = "evidence"

    def __init__(self, work_dir: Path) -> None:
        self.path = work_dir / "findings.jsonl.gz"
        self._file = self.path.open("wb")
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb", compresslevel=6, mtime=0)
        self.stats = SinkStats(self.name)

    def write(self, batch: list[EncodedFinding]) -> None:
        data = b"\n".join(encoded.line for encoded in batch) + b"\n"
        self._gzip.write(data)
        self.stats.rows += len(batch)
        self.stats.bytes += len(data)

    def close(self) -> SinkStats:
        self._gzip.close()
        self._file.close()
        return self.stats

    def abort(self) -> None:
        self.close()


@dataclass(frozen=True)
class ArchivedRun:
    prefix: str
    run_id: str
    day: date


class EvidenceArchive:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @staticmethod
    def prefix(run_id: str, started: datetime) -> str:
        return f"{started:%Y/%m/%d}/{run_id}/"

    def write(self, run_record: dict, *, findings_gz: Path, snapshot_path: Path | None, started: datetime,
              queries: dict[str, str] | None = None) -> str:
        """Archive one run; returns its prefix. The manifest is written last, so a run with a manifest is whole."""
        prefix = self.prefix(run_record["RunId"], started)
        objects: list[tuple[str, bytes]] = [
            ("findings.jsonl.gz", findings_gz.read_bytes()),
            ("summary.json", json.dumps(run_record, indent=2, default=str).encode()),
            ("rules.json", json.dumps(catalog_document(), indent=2).encode()),
        ]
        if snapshot_path is not None:
            objects.insert(0, ("snapshot.jsonl.gz", snapshot_path.read_bytes()))
        listed = []
        for name, data in objects:
            self.store.put(prefix + name, data)
            listed.append({"name": name, "sha256": _sha256(data), "bytes": len(data)})
        manifest = {
            "tool": "acr-pull-auditor", "toolVersion": __version__, "runId": run_record["RunId"],
            "createdAt": datetime.now(UTC).isoformat(timespec="seconds"), "scope": run_record.get("Scope"),
            "runStatus": run_record.get("RunStatus"), "ruleCatalogVersion": run_record.get("RuleCatalogVersion"),
            "coverage": run_record.get("Coverage"), "queries": queries or {}, "objects": listed,
        }
        self.store.put(prefix + MANIFEST, json.dumps(manifest, indent=2).encode())
        return prefix

    def runs(self, date_from: date | None = None, date_to: date | None = None) -> list[ArchivedRun]:
        """Archived runs (those with a manifest) between two days, inclusive."""
        if date_from and date_to and (date_to - date_from).days <= 366:
            prefixes = [f"{date_from + timedelta(days=n):%Y/%m/%d}/" for n in range((date_to - date_from).days + 1)]
        else:
            prefixes = [""]
        found = []
        for listing_prefix in prefixes:
            for item in self.store.list(listing_prefix):
                parts = item.name.split("/")
                if len(parts) != 5 or parts[4] != MANIFEST:
                    continue
                try:
                    day = date(int(parts[0]), int(parts[1]), int(parts[2]))
                except ValueError:
                    continue
                if (date_from and day < date_from) or (date_to and day > date_to):
                    continue
                found.append(ArchivedRun("/".join(parts[:4]) + "/", parts[3], day))
        return sorted(found, key=lambda r: (r.day, r.run_id))

    def find(self, run_id: str) -> ArchivedRun | None:
        return next((r for r in self.runs() if r.run_id == run_id), None)

    def manifest(self, run: ArchivedRun) -> dict:
        return json.loads(self.store.get(run.prefix + MANIFEST))

    def verify(self, run: ArchivedRun) -> list[str]:
        """Every problem with one archived run: missing, modified or unlisted objects (empty when intact)."""
        try:
            manifest = self.manifest(run)
        except (ObjectMissing, ValueError) as exc:
            return [f"{self.store.location(run.prefix + MANIFEST)}: manifest unreadable: {exc}"]
        problems = []
        listed = {o["name"] for o in manifest.get("objects", [])}
        for entry in manifest.get("objects", []):
            location = self.store.location(run.prefix + entry["name"])
            try:
                data = self.store.get(run.prefix + entry["name"])
            except ObjectMissing:
                problems.append(f"{location}: missing")
                continue
            if len(data) != entry["bytes"] or _sha256(data) != entry["sha256"]:
                problems.append(f"{location}: modified (SHA-256 {_sha256(data)[:16]}…, manifest says "
                                f"{entry['sha256'][:16]}…)")
        for item in self.store.list(run.prefix):
            name = item.name[len(run.prefix):]
            if name != MANIFEST and name not in listed:
                problems.append(f"{self.store.location(item.name)}: not listed in the manifest")
        return problems

    def export(self, runs: list[ArchivedRun], out: Path) -> Path:
        """A zip for auditors: per run the manifest, the findings as CSV, the run record and a readable summary."""
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            for run in runs:
                folder = f"{run.day:%Y-%m-%d}_{run.run_id}/"
                manifest = self.manifest(run)
                bundle.writestr(folder + MANIFEST, json.dumps(manifest, indent=2))
                summary = json.loads(self.store.get(run.prefix + "summary.json"))
                bundle.writestr(folder + "summary.json", json.dumps(summary, indent=2))
                findings = gzip.decompress(self.store.get(run.prefix + "findings.jsonl.gz")).decode().splitlines()
                bundle.writestr(folder + "findings.csv", _csv(findings))
                bundle.writestr(folder + "summary.txt", _readable(summary, manifest, self.verify(run)))
        return out


def _csv(lines: list[str]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FINDING_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for line in lines:
        if line.strip():
            record = json.loads(line)
            record["Evidence"] = json.dumps(record.get("Evidence"), ensure_ascii=False, separators=(",", ":"))
            writer.writerow(record)
    return text.getvalue()


def _readable(summary: dict, manifest: dict, problems: list[str]) -> str:
    coverage = summary.get("Coverage") or {}
    lines = [
        f"Run {summary.get('RunId')} ({summary.get('RunStatus')})",
        f"  time:      {summary.get('StartTime')} to {summary.get('EndTime')}",
        f"  source:    {summary.get('Source')}   scope: {summary.get('Scope')}",
        f"  coverage:  {summary.get('SubscriptionsSeen')} subscriptions; "
        f"{coverage.get('requests', '-')} requests, {coverage.get('rows', '-')} rows, "
        f"{len(coverage.get('gaps') or [])} collection gap(s)",
        f"  findings:  {summary.get('FindingCount')} (Pass {summary.get('PassCount')}, "
        f"Fail {summary.get('FailCount')}, Unknown {summary.get('UnknownCount')}, "
        f"NotApplicable {summary.get('NotApplicableCount')})",
        f"  tool:      {summary.get('ToolVersion')}, rule catalog {summary.get('RuleCatalogVersion')}",
        "  integrity: " + ("PROBLEMS: " + "; ".join(problems) if problems
                           else f"all {len(manifest.get('objects', []))} objects match the manifest"),
        "",
        "Per rule (Pass / Fail / Unknown / NotApplicable):",
    ]
    for rule_id, counts in sorted((summary.get("Counts") or {}).items()):
        lines.append(f"  {rule_id}: {counts.get('Pass', 0)} / {counts.get('Fail', 0)} / {counts.get('Unknown', 0)} / "
                     f"{counts.get('NotApplicable', 0)}")
    exceptions = list(summary.get("Errors") or []) + [f"collection gap: {g.get('query')}: {g.get('reason')}"
                                                        for g in coverage.get("gaps") or []]
    lines += ["", "Exceptions:"] + ([f"  - {e}" for e in exceptions] or ["  none"])
    return "\n".join(lines) + "\n"
