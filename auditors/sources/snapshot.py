"""Read Resource Graph rows from a snapshot: a JSON/JSON Lines file or a directory of them.

Accepted shapes per file: a JSON array of rows; an object with a `data` array (what
`az graph query -o json` and the REST API return), or `data` in table format
(`columns` + `rows`); a single resource object; JSON Lines; and PSRule for Azure's
`Export-AzRuleData` output (PascalCase keys, child resources nested under `resources`).

Rows already in Resource Graph's own shape (lower-case `type`, only Resource Graph's top-level keys) take a
fast path: they are used as parsed. Parsing is orjson's, which refuses what JSON cannot carry safely (lone
surrogates, integers beyond 64 bits, nesting deeper than 1,024): such a file is unusable input, named with
its line. Files are capped in size, and symbolic links that leave the snapshot folder are not followed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate, chain
from pathlib import Path
from typing import Any, Protocol

import orjson

from auditors.arm import dig, type_from_id

SNAPSHOT_SUFFIXES = (".json", ".jsonl", ".ndjson")
STREAMED_SUFFIXES = (".jsonl", ".ndjson")
# Files a snapshot directory may carry that are not rows.
NON_ROW_FILES = {"manifest.json"}
# A whole-document .json file is parsed in memory; past this, JSON Lines is the format to use.
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024
# Row types that are not ARM resources and may carry no `id` (Container Insights tables; Microsoft Graph's
# "not found" answers).
ID_LESS_TYPES = ("containerinsights/", "microsoft.graph/")

# Top-level keys as Resource Graph spells them, keyed by lower-case spelling, plus PSRule aliases.
_CANONICAL_KEYS = {
    key.lower(): key
    for key in (
        "id", "name", "type", "location", "resourceGroup", "subscriptionId", "tenantId", "kind",
        "managedBy", "sku", "plan", "properties", "tags", "identity", "zones", "extendedLocation",
    )
}
_RESOURCE_GRAPH_KEYS = frozenset(_CANONICAL_KEYS.values())
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
    """The table a row of this type lives in (Resource Graph's, Microsoft Graph's or Container Insights')."""
    lowered = row_type.lower()
    if lowered.startswith("microsoft.authorization/"):
        return "authorizationresources"
    if lowered.startswith(("microsoft.resources/subscriptions", "microsoft.management/")):
        return "resourcecontainers"
    if lowered.startswith("microsoft.graph/"):
        return "microsoftgraph"
    if lowered.startswith(ID_LESS_TYPES):
        return "containerinsights"
    return "resources"


def snapshot_files(path: Path, report: LoadReport | None = None) -> list[Path]:
    if not path.exists():
        raise SnapshotError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    root = path.resolve()
    files, seen = [], {}
    for candidate in sorted(path.rglob("*")):
        if candidate.suffix.lower() not in SNAPSHOT_SUFFIXES or candidate.name.lower() in NON_ROW_FILES:
            continue
        target = candidate.resolve()
        if candidate.is_symlink() and root not in target.parents:
            if report is not None:
                report.skip(str(candidate), f"symbolic link to {target}, outside the snapshot folder: not read")
            continue
        if target in seen:  # a link to a file that is read already: its rows would only repeat
            if report is not None:
                report.skip(str(candidate), f"the same file as {seen[target]}: read once")
            continue
        if candidate.is_file():
            seen[target] = candidate
            files.append(candidate)
    if not files:
        raise SnapshotError(f"{path}: directory holds no .json, .jsonl or .ndjson files")
    return files


class SplitRead(Protocol):
    """A large JSON Lines file read in byte ranges: this process reads the first ones, other processes the rest
    (see `auditors.inputs`)."""

    def head_lengths(self) -> Iterable[int]:
        """The lengths of the ranges this process reads, one after the other from the start of the file (asked
        for one at a time, as it reads)."""

    def rest(self) -> tuple[Iterable[tuple[Any, Any]], dict[str, int]]:
        """Once the head's rows are taken in: the raw rows this process must still read after it (a share that
        could not be read elsewhere) and the rows per type already taken in from the other processes."""


def iter_snapshot(path: str | Path, report: LoadReport | None = None,
                  splits: dict[Path, SplitRead] | None = None) -> Iterator[dict]:
    """Yield normalised rows from every file under `path`; raise SnapshotError on unusable input. A file in
    `splits` is read here only up to its split; the rest comes from its `SplitRead`, at the same place in the
    stream of rows."""
    report = report if report is not None else LoadReport()
    tables: dict[str, int] = {}  # rows per type, folded into rows per table at the end of each file
    for file in snapshot_files(Path(path), report):
        report.files += 1
        split = splits.get(file) if splits else None
        yielded = yield from _normalised(_raw_rows(file, split.head_lengths() if split else None), report, tables)
        if split is not None:
            raws, taken = split.rest()
            yielded += yield from _normalised(raws, report, tables)
            for row_type, count in taken.items():
                tables[row_type] = tables.get(row_type, 0) + count
                yielded += count
        report.rows += yielded
        for row_type, count in tables.items():
            table = table_of(row_type)
            report.tables[table] = report.tables.get(table, 0) + count
        tables.clear()
        if yielded == 0 and not _is_empty_document(file):
            raise SnapshotError(
                f"{file}: unknown shape: no Azure resource rows found (expected rows with `id` and `type`, "
                "a JSON array, an object with a `data` array, or JSON Lines)"
            )
    if report.rows == 0:
        raise SnapshotError(f"{path}: empty snapshot: no resource rows in {report.files} file(s)")


def _normalised(raws: Iterable[tuple[Any, Any]], report: LoadReport, tables: dict[str, int]):
    """Rows in Resource Graph's spelling, counted per type in `tables`; returns how many were yielded."""
    yielded = 0
    for where, raw in raws:
        row_type = row_id = None
        if raw.__class__ is dict:
            row_type, row_id = raw.get("type"), raw.get("id")
        if (row_type.__class__ is str and row_type.islower() and row_id.__class__ is str and row_id
                and raw.keys() <= _RESOURCE_GRAPH_KEYS):  # already in Resource Graph's shape: as parsed
            yielded += 1
            tables[row_type] = tables.get(row_type, 0) + 1
            yield raw
            continue
        for row in _flatten(raw, where, report):
            yielded += 1
            tables[row["type"]] = tables.get(row["type"], 0) + 1
            yield row
    return yielded


def unnumbered_rows_of_range(file: Path, start: int, stop: int, report: LoadReport) -> Iterator[dict]:
    """The rows of one byte range of a JSON Lines file (from a line start to a line start), as `iter_snapshot`
    yields them, without counting the lines before it: for a reader that never reports where a row is (the
    parallel load's workers hand a share with any problem back to the run, which reads it again)."""
    return _normalised(json_lines_range(file, start, stop, first_line=1 if start == 0 else 2), report, {})


def line_starts(file: Path, parts: int) -> list[int]:
    """Byte offsets that cut a file into `parts` ranges of about equal size, each at the start of a line:
    [0, ..., size] (fewer ranges when lines are longer than a range)."""
    size = file.stat().st_size
    cuts = [size * part // parts for part in range(1, parts)]
    offsets = [0]
    with file.open("rb") as handle:
        for cut in cuts:
            handle.seek(max(cut - 1, offsets[-1]))
            handle.readline()  # to the end of the line the cut fell in (a cut at a line start stays)
            offsets.append(min(handle.tell(), size))
    offsets.append(size)
    return sorted(set(offsets))


def json_lines_range(file: Path, start: int, stop: int, first_line: int | None = None) -> Iterator[tuple[Any, Any]]:
    """Raw records of the lines in [start, stop), numbered as in the whole file (or from `first_line`, which
    must not be 1 unless `start` is 0: a first line loses its byte-order mark)."""
    try:
        with file.open("rb") as handle:
            if first_line is None:
                first_line = 1 + _count_lines(handle, start)
            handle.seek(start)
            yield from _json_lines(file, enumerate(_lines_until(handle, stop - start), start=first_line))
    except OSError as exc:
        raise SnapshotError(f"{file}: cannot read: {exc.strerror or exc}") from None


def _count_lines(handle, length: int) -> int:
    handle.seek(0)
    count = 0
    while length > 0:
        block = handle.read(min(length, 16 * 1024 * 1024))
        if not block:
            break
        count += block.count(b"\n")
        length -= len(block)
    return count


def _lines_until(handle, length: int) -> Iterator[bytes]:
    """The lines of the next `length` bytes (which end at a line end), read a block of whole lines at a time."""
    return chain.from_iterable(_blocks_until(handle, length))


def _blocks_until(handle, length: int) -> Iterator[list[bytes]]:
    while length > 0:
        block = handle.readlines(min(length, 4 * 1024 * 1024))
        if not block:
            return
        ends = list(accumulate(map(len, block)))
        if ends[-1] > length:
            block = block[:bisect_left(ends, length) + 1]
        yield block
        length -= ends[-1]


def _is_empty_document(file: Path) -> bool:
    try:
        text = file.read_bytes().decode("utf-8-sig", errors="replace").strip()
    except OSError:
        return False
    return text in ("", "[]", "{}") or text.replace(" ", "") in ('{"data":[]}',)


_BOM = b"\xef\xbb\xbf"


def _raw_rows(file: Path, lengths: Iterable[int] | None = None) -> Iterator[tuple[str, Any]]:
    if file.suffix.lower() in STREAMED_SUFFIXES:
        yield from _lines_of(file, lengths)
        return
    try:
        size = file.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            raise SnapshotError(f"{file}: {size:,} bytes is over the {MAX_DOCUMENT_BYTES:,}-byte limit for a JSON "
                                "document; write large snapshots as JSON Lines (.jsonl)")
        data = file.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"{file}: cannot read: {exc.strerror or exc}") from None
    data = data.removeprefix(_BOM)
    if not data.strip():
        return
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if _looks_like_json_lines(data):
            yield from _json_lines(file, enumerate(data.splitlines(), start=1))
            return
        raise SnapshotError(f"{file}: line {exc.lineno} column {exc.colno}: invalid JSON: {_reason(exc)}") from None
    yield from _rows_of_document(file, document)


def _reason(exc: orjson.JSONDecodeError) -> str:
    """orjson's message without its position suffix (the caller names line and column)."""
    return str(exc.msg).split(": line ")[0]


def _lines_of(file: Path, lengths: Iterable[int] | None = None) -> Iterator[tuple[str | tuple[Path, int], Any]]:
    """The records of the whole file, or of its ranges of these lengths one after the other from its start."""
    try:
        with file.open("rb") as handle:
            lines = handle if lengths is None else chain.from_iterable(_consecutive_ranges(handle, lengths))
            yield from _json_lines(file, enumerate(lines, start=1))
    except OSError as exc:
        raise SnapshotError(f"{file}: cannot read: {exc.strerror or exc}") from None


def _consecutive_ranges(handle, lengths: Iterable[int]) -> Iterator[Iterator[bytes]]:
    """The lines of ranges of these lengths, one after the other from the start of the file. Each starts where the
    last ended, not where the handle is: reading whole lines in blocks goes past a range's end."""
    start = 0
    for length in lengths:
        handle.seek(start)
        yield _lines_until(handle, length)
        start += length


def _looks_like_json_lines(data: bytes) -> bool:
    first = next((line for line in data.splitlines() if line.strip()), b"")
    try:
        return isinstance(orjson.loads(first), dict) and data.strip() != first.strip()
    except orjson.JSONDecodeError:
        return False


def _json_lines(file: Path, lines) -> Iterator[tuple[str | tuple[Path, int], Any]]:
    """JSON Lines records, parsed (the hot path of a large snapshot: keep it lean)."""
    loads, dict_class = orjson.loads, dict
    for number, line in lines:
        try:
            value = loads(line.removeprefix(_BOM) if number == 1 else line)
        except orjson.JSONDecodeError as exc:
            if not line.strip():
                continue
            raise SnapshotError(f"{file}: line {number}: invalid JSON Lines record: {_reason(exc)}") from None
        if value.__class__ is dict_class:
            yield (file, number), value  # the place is spelled out only if the row turns out to need it
        else:
            yield from _non_object_record(file, number, value)


def _non_object_record(file: Path, number: int, value: Any) -> Iterator[tuple[str, Any]]:
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
        columns = dig(data, "columns", default=[])
        if not isinstance(columns, list):
            raise SnapshotError(f"{file}: unknown shape: `data.columns` is a JSON {type(columns).__name__}, "
                                "not a list of columns")
        columns = [dig(c, "name") if isinstance(c, dict) else c for c in columns]
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


def _flatten(raw: Any, where: str | tuple[Path, int], report: LoadReport) -> Iterator[dict]:
    if isinstance(where, tuple):
        where = f"{where[0]}:{where[1]}"
    if not isinstance(raw, dict):
        report.skip(where, f"row is a JSON {type(raw).__name__}, not an object")
        return
    declared = raw.get("type")
    if isinstance(declared, str) and declared.lower().startswith(ID_LESS_TYPES):
        yield {**raw, "type": declared.lower()}  # their columns are the table's own: no Resource Graph spelling
        return
    children = dig(raw, "resources")
    row = normalise_row({k: v for k, v in raw.items() if not (isinstance(k, str) and k.lower() == "resources")})
    if row["type"].startswith(ID_LESS_TYPES):
        yield row
    elif not isinstance(row.get("id"), str) or not row["id"].strip():
        report.skip(where, "row has no `id`")
    elif not row["type"]:
        report.skip(where, f"row {row['id']} has no `type`")
    else:
        yield row
    if isinstance(children, list):
        for index, child in enumerate(children):
            yield from _flatten(child, f"{where}.resources[{index}]", report)
