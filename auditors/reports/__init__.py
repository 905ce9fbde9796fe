"""Human reports of a run: a self-contained HTML page, a short Markdown summary and summary.json.

    write_reports("out/findings.jsonl", run_record, "out")   # -> [out/report.html, out/report.md, out/summary.json]

The findings are read once, streaming (a path to findings.jsonl, optionally .gz, or any iterable of records).
`run_record` is the run's RunRecord as a dict (`RunRecord.to_record()`): run facts, coverage, exemption states,
New/Fixed counts, the evidence chain. Without one (`{}`, e.g. a findings file from an older run) the report says
what the findings alone say: exemption states are read from the AKS-ACR-013 findings, pair verdicts from the
AKS-ACR-000 findings or, in files older than that rule, derived from the checks in the same order.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from auditors.findings import read_records
from auditors.reports.data import ReportData
from auditors.reports.html import render_html
from auditors.reports.markdown import render_markdown
from auditors.sinks.base import SinkStats

__all__ = ["FILE_NAMES", "ReportData", "ReportSink", "read_findings", "render_html", "render_markdown",
           "write_reports"]

FILE_NAMES = {"html": "report.html", "md": "report.md", "json": "summary.json"}


def read_findings(path: str | Path) -> Iterator[dict]:
    """Records of a findings.jsonl (or .jsonl.gz) file, one at a time, every column filled in."""
    return read_records(path)


def _write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    # Not tempfile.mkstemp: its 0600 mode would survive the rename; "x" creates with the umask's mode.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("x", encoding="utf-8", newline="\n") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _chosen(formats: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(formats))
    unknown = [name for name in chosen if name not in FILE_NAMES]
    if unknown:
        raise ValueError(f"unknown report format(s) {', '.join(unknown)}; choose from {', '.join(FILE_NAMES)}")
    return chosen


def _write(data: ReportData, out_dir: str | Path, chosen: list[str]) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    renderers = {"html": lambda: render_html(data), "md": lambda: render_markdown(data),
                 "json": lambda: json.dumps(data.to_json(), indent=2, ensure_ascii=False) + "\n"}
    written = []
    for name in chosen:
        path = out / FILE_NAMES[name]
        _write_atomically(path, renderers[name]())
        written.append(path)
    return written


def _catalog() -> list:
    from auditors.rules import catalog

    return catalog()


def write_reports(findings: str | Path | Iterable[dict], run: dict | None, out_dir: str | Path,
                  formats: Iterable[str] = ("html", "md", "json"), rules: Iterable | None = None) -> list[Path]:
    """Build the report data in one pass over a findings file (or records) and write the chosen formats;
    returns the paths written."""
    chosen = _chosen(formats)
    records = read_findings(findings) if isinstance(findings, str | Path) else findings
    return _write(ReportData.build(records, run or {}, _catalog() if rules is None else rules), out_dir, chosen)


class ReportSink:
    """The reports of the run being made, fed like the other sinks (nothing is read back from the files);
    `write` them once the run record exists."""

    name = "report"

    def __init__(self, formats: Iterable[str]) -> None:
        self.chosen = _chosen(formats)
        self._builder = ReportData.builder(_catalog())
        self.rows = 0

    def write(self, batch: list) -> None:
        add = self._builder.add
        for encoded in batch:
            add(encoded.finding.to_record())
        self.rows += len(batch)

    def close(self) -> SinkStats:
        return SinkStats(self.name, rows=self.rows)

    def abort(self) -> None:
        pass

    def write_files(self, run: dict, out_dir: str | Path) -> list[Path]:
        return _write(self._builder.finish(run), out_dir, self.chosen)
