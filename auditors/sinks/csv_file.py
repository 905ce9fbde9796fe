"""findings.csv, written by a process of its own from the same JSON Lines bytes as findings.jsonl.

The CSV is for people (a spreadsheet): every column, the formula guard of `csv_cell`, Evidence as JSON text.
Formatting it costs about as much as evaluating the findings, so a second process does it while the run goes
on: the run hands it each batch's JSON Lines (the bytes it writes to findings.jsonl anyway), and the writer
expands every wire row back to all columns (`auditors.findings.expand`), so the CSV also shows that nothing a
wire row leaves out is lost.

    python -m auditors.sinks.csv_file TARGET < findings.jsonl
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import orjson

from auditors.findings import FINDING_FIELDS, csv_cell, expand

_COLUMNS = FINDING_FIELDS[:-1]  # Evidence, last, is written as JSON


def csv_row(record: dict) -> list[str]:
    """One finding record (all columns) as CSV cells."""
    row = [csv_cell(record[name]) for name in _COLUMNS]
    row.append(orjson.dumps(record["Evidence"]).decode())
    return row


def write_csv(source: BinaryIO, target: Path) -> int:
    """Every JSON Lines finding of `source` as a row of `target` (header first); returns the rows written."""
    rows = 0
    with target.open("w", encoding="utf-8", newline="", errors="replace") as handle:
        writer = csv.writer(handle)
        writer.writerow(FINDING_FIELDS)
        batch = []
        for line in source:
            if line.strip():
                batch.append(csv_row(expand(orjson.loads(line))))
            if len(batch) >= 1000:
                writer.writerows(batch)
                rows += len(batch)
                batch = []
        writer.writerows(batch)
        rows += len(batch)
        handle.flush()
        os.fsync(handle.fileno())
    return rows


class CsvWriter:
    """The writer process: `send` JSON Lines, then `finish` (None, or why the file is not complete)."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.error: str | None = None
        self._process = subprocess.Popen([sys.executable, "-m", __name__, str(target)], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def send(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self._process.stdin.write(data)
        except (BrokenPipeError, OSError) as exc:  # the writer died; `finish` says why
            self.error = f"the CSV writer stopped ({type(exc).__name__})"

    def finish(self) -> str | None:
        _, stderr = self._process.communicate()  # closes its input: the writer finishes the file
        if self._process.returncode != 0:
            last = stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {self._process.returncode}"]
            self.error = f"{self.target.name}: not written: {last[0][:300]}"
        return self.error

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m auditors.sinks.csv_file TARGET < findings.jsonl", file=sys.stderr)
        return 2
    try:
        write_csv(sys.stdin.buffer, Path(argv[0]))
    except (OSError, ValueError, KeyError) as exc:
        print(f"{argv[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
