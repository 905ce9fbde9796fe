"""Write findings as JSON Lines and CSV while they are produced (nothing held twice in memory)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from auditors.findings import FINDING_FIELDS, Finding


class LocalSink:
    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.jsonl_path = self.out_dir / "findings.jsonl"
        self.csv_path = self.out_dir / "findings.csv"

    def write(self, findings: Iterable[Finding]) -> Iterator[Finding]:
        """Write each finding to both files and pass it on (for the summary)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with (self.jsonl_path.open("w", encoding="utf-8") as jsonl,
              self.csv_path.open("w", encoding="utf-8", newline="") as csv_file):
            table = csv.DictWriter(csv_file, fieldnames=FINDING_FIELDS)
            table.writeheader()
            for finding in findings:
                record = finding.to_record()
                jsonl.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
                record["Evidence"] = json.dumps(record["Evidence"], ensure_ascii=False, separators=(",", ":"))
                table.writerow(record)
                yield finding
