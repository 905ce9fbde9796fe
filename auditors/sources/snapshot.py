"""Read Resource Graph rows from a snapshot: a JSON/JSON Lines file or a directory of them.

Accepted shapes per file: a JSON array of rows; an object with a `data` array (what
`az graph query -o json` and the REST API return), or `data` in table format
(`columns` + `rows`); a single resource object; JSON Lines; and PSRule for Azure's
`Export-AzRuleData` output (PascalCase keys, child resources nested under `resources`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditors.arm import dig, type_from_id

SNAPSHOT_SUFFIXES = (".json", ".jsonl", ".ndjson")
STREAMED_SUFFIXES = (".jsonl", ".ndjson")
# Files a snapshot directory may carry that are not rows.
NON_ROW_FILES = {"manifest.json"}

# Top-level keys as Resource Graph spells them, keyed by lower-case spelling, plus PSRule aliases.
_CANONICAL_KEYS = {
    key.lower(): key
    for key in (
        "id", "name", "type", "location", "resourceGroup", "subscriptionId", "tenantId", "kind",
        "managedBy", "sku", "plan", "properties", "tags", "identity", "zones", "extendedLocation",
    )
}
_PSRULE_ALIASES = {
    "resourceid": "id",
    "resourcename": "name",
    "resourcetype": "type",
    "resourcegroupname": "resourceGroup",
}


class SnapshotError(Exception):
    """Unusable snapshot input; the message names the file (and line or row) and the problem."""


@dataclass
class LoadReport:
    files: int = 0
    rows: int = 0
    skipped: list[str] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)  # rows per Resource Graph table

    def skip(self, where: str, why: str) -> None:
        self.skipped.append(f"{where}: {why}")


def table_of(row_type: str) -> str:
    """The Resource Graph table a row of this type lives in."""
    lowered = row_type.lower()
    if lowered.startswith("microsoft.authorization/"):
        return "authorizationresources"
    if lowered.startswith(("microsoft.resources/subscriptions", "microsoft.management/")):
        return "resourcecontainers"
    return "resources"


def snapshot_files(path: Path) -> list[Path]:
    if not path.exists():
        raise SnapshotError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in SNAPSHOT_SUFFIXES and p.name.lower() not in NON_ROW_FILES
    )
    if not files:
        raise SnapshotError(f"{path}: directory holds no .json, .jsonl or .ndjson files")
    return files


def iter_snapshot(path: str | Path, report: LoadReport | None = None) -> Iterator[dict]:
    """Yield normalised rows from every file under `path`; raise SnapshotError on unusable input."""
    report = report if report is not None else LoadReport()
    for file in snapshot_files(Path(path)):
        report.files += 1
        yielded = 0
        for where, raw in _raw_rows(file):
            for row in _flatten(raw, where, report):
                yielded += 1
                report.rows += 1
                table = table_of(row["type"])
                report.tables[table] = report.tables.get(table, 0) + 1
                yield row
        if yielded == 0 and not _is_empty_document(file):
            raise SnapshotError(
                f"{file}: unknown shape: no Azure resource rows found (expected rows with `id` and `type`, "
                "a JSON array, an object with a `data` array, or JSON Lines)"
            )
    if report.rows == 0:
        raise SnapshotError(f"{path}: empty snapshot: no resource rows in {report.files} file(s)")


def _is_empty_document(file: Path) -> bool:
    try:
        text = file.read_text(encoding="utf-8-sig").strip()
    except OSError:
        return False
    return text in ("", "[]", "{}") or text.replace(" ", "") in ('{"data":[]}',)


def _raw_rows(file: Path) -> Iterator[tuple[str, Any]]:
    if file.suffix.lower() in STREAMED_SUFFIXES:
        yield from _json_lines(file, _lines_of(file))
        return
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{file}: cannot read: {exc}") from exc
    if not text.strip():
        return
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if _looks_like_json_lines(text):
            yield from _json_lines(file, enumerate(text.splitlines(), start=1))
            return
        raise SnapshotError(f"{file}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}") from exc
    yield from _rows_of_document(file, document)


def _lines_of(file: Path) -> Iterator[tuple[int, str]]:
    try:
        with file.open(encoding="utf-8-sig") as handle:
            yield from enumerate(handle, start=1)
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{file}: cannot read: {exc}") from exc


def _looks_like_json_lines(text: str) -> bool:
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict) and text.strip() != first.strip()
    except json.JSONDecodeError:
        return False


def _json_lines(file: Path, lines) -> Iterator[tuple[str, Any]]:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SnapshotError(f"{file}: line {number}: invalid JSON Lines record: {exc.msg}") from exc
        where = f"{file}:{number}"
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield f"{where}[{index}]", item
        else:
            yield where, value


def _rows_of_document(file: Path, document: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(document, list):
        for index, item in enumerate(document):
            yield f"{file}[{index}]", item
        return
    if not isinstance(document, dict):
        raise SnapshotError(f"{file}: unknown shape: top-level JSON {type(document).__name__} is not rows")
    data = dig(document, "data")
    if isinstance(data, list):
        for index, item in enumerate(data):
            yield f"{file}: data[{index}]", item
        return
    if isinstance(data, dict) and isinstance(dig(data, "rows"), list):
        columns = [dig(c, "name") if isinstance(c, dict) else c for c in dig(data, "columns", default=[])]
        for index, values in enumerate(dig(data, "rows")):
            cells = values if isinstance(values, list) else []
            yield f"{file}: data.rows[{index}]", dict(zip(columns, cells, strict=False))
        return
    if dig(document, "id") or dig(document, "resourceId"):
        yield str(file), document
        return
    if dig(document, "$schema") and dig(document, "contentVersion"):
        raise SnapshotError(f"{file}: this is an ARM template, not a snapshot of deployed resources; "
                            "export resource rows with `az graph query` (see README)")
    keys = ", ".join(sorted(str(k) for k in document)[:8])
    raise SnapshotError(f"{file}: unknown shape: object without a `data` array or resource `id` (keys: {keys})")


def normalise_row(raw: dict) -> dict:
    """Resource Graph spelling for top-level keys; nested keys stay as they are (read them with `dig`)."""
    row: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            continue
        lowered = key.lower()
        canonical = _PSRULE_ALIASES.get(lowered) or _CANONICAL_KEYS.get(lowered) or key
        if canonical in row and row[canonical] not in (None, ""):
            continue  # PSRule carries both `Id` and `ResourceId`; the first non-empty wins
        row[canonical] = value
    declared = row.get("type")
    # The id is authoritative: PSRule exports give extension resources their parent's `Type`.
    row["type"] = type_from_id(row.get("id")) or (declared.lower() if isinstance(declared, str) else "")
    return row


def _flatten(raw: Any, where: str, report: LoadReport) -> Iterator[dict]:
    if not isinstance(raw, dict):
        report.skip(where, f"row is a JSON {type(raw).__name__}, not an object")
        return
    children = dig(raw, "resources")
    row = normalise_row({k: v for k, v in raw.items() if not (isinstance(k, str) and k.lower() == "resources")})
    if not isinstance(row.get("id"), str) or not row["id"].strip():
        report.skip(where, "row has no `id`")
    elif not row["type"]:
        report.skip(where, f"row {row['id']} has no `type`")
    else:
        yield row
    if isinstance(children, list):
        for index, child in enumerate(children):
            yield from _flatten(child, f"{where}.resources[{index}]", report)
