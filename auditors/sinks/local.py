"""Findings as JSON Lines and CSV in an output folder, replaced atomically.

Each run writes temporary files named after itself beside the final ones and renames them into place only
when every finding is written, so a failed or concurrent run never leaves a half-written or mixed file, and
the previous run's files stay until the new ones are complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson

from auditors.findings import EncodedFinding
from auditors.sinks.base import SinkStats
from auditors.sinks.csv_lines import CsvLines, header

FINDINGS_JSONL, FINDINGS_CSV, RUN_RECORD = "findings.jsonl", "findings.csv", "run.json"


class OutputFolderError(ValueError):
    """The output folder cannot be used; the message names it and why."""


def check_output_folder(out_dir: str | Path) -> Path:
    """The folder, created if missing; raises OutputFolderError when it is a file or cannot be written."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"--out {folder}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"--out {folder}: cannot create the folder: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise OutputFolderError(f"--out {folder}: not writable")
    return folder


class LocalFilesSink:
    """findings.jsonl and findings.csv, renamed into place together once complete, or neither."""

    name = "local"

    def __init__(self, out_dir: str | Path, run_id: str) -> None:
        self.folder = check_output_folder(out_dir)
        self.run_id = run_id
        self.paths = [self.folder / FINDINGS_JSONL, self.folder / FINDINGS_CSV]
        self._temporary = [path.with_name(f".{path.name}.{run_id}.tmp") for path in self.paths]
        self._jsonl = self._temporary[0].open("wb")
        self._csv = self._temporary[1].open("wb")
        self._csv.write(header().encode())
        self._csv_lines = CsvLines()
        self.stats = SinkStats(self.name)

    def write(self, batch: list[EncodedFinding]) -> None:
        self.stats.bytes += _write_lines(batch, self._jsonl, self._csv, self._csv_lines)
        self.stats.rows += len(batch)

    def part(self, index: int) -> _LocalFilesPart:
        return _LocalFilesPart([path.with_name(f".{path.name}.{self.run_id}.part{index}.tmp") for path in self.paths])

    def absorb(self, finished: tuple[list[str], int, int]) -> None:
        """A worker's part files appended to this run's files, in the order of the parts."""
        paths, rows, size = finished
        for part, handle in zip(paths, (self._jsonl, self._csv), strict=True):
            handle.flush()
            with open(part, "rb") as source:
                _append(source, handle)
            os.unlink(part)
        self.stats.rows += rows
        self.stats.bytes += size

    def _discard_parts(self) -> None:
        for path in self.paths:
            for part in self.folder.glob(f".{path.name}.{self.run_id}.part*.tmp"):
                part.unlink(missing_ok=True)

    def close(self) -> SinkStats:
        for handle in (self._jsonl, self._csv):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        for temporary, path in zip(self._temporary, self.paths, strict=True):
            os.replace(temporary, path)
        self.stats.detail["files"] = [str(p) for p in self.paths]
        return self.stats

    def abort(self) -> None:
        for handle in (self._jsonl, self._csv):
            if not handle.closed:
                handle.close()
        for temporary in self._temporary:
            temporary.unlink(missing_ok=True)
        self._discard_parts()


def _write_lines(batch: list[EncodedFinding], jsonl, csv, csv_lines: CsvLines) -> int:
    """A batch as JSON Lines and CSV lines; returns the JSON Lines bytes written."""
    data = b"\n".join(encoded.line for encoded in batch) + b"\n"
    jsonl.write(data)
    line = csv_lines.line
    csv.write("".join([line(encoded) for encoded in batch]).encode("utf-8", "replace"))
    return len(data)


def _append(source, target) -> None:
    """All of `source` appended to `target` (flushed), by the kernel where it can (no copy through this process)."""
    length = os.fstat(source.fileno()).st_size
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is not None:
        try:
            while length > 0:
                copied = copy_range(source.fileno(), target.fileno(), length)
                if copied == 0:
                    break
                length -= copied
            target.seek(0, os.SEEK_END)
            if length == 0:
                return
        except OSError:  # a file system or kernel without it: copy through this process
            pass
    target.seek(0, os.SEEK_END)
    shutil.copyfileobj(source, target, 8 * 1024 * 1024)


class _LocalFilesPart:
    """A worker's share of findings.jsonl and findings.csv (no CSV header), for `LocalFilesSink.absorb`."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self._jsonl, self._csv = (path.open("wb") for path in paths)
        self._csv_lines = CsvLines()
        self.rows = self.bytes = 0

    def write(self, batch: list[EncodedFinding]) -> None:
        self.bytes += _write_lines(batch, self._jsonl, self._csv, self._csv_lines)
        self.rows += len(batch)

    def finish(self) -> tuple[list[str], int, int]:
        for handle in (self._jsonl, self._csv):
            handle.close()
        return [str(path) for path in self.paths], self.rows, self.bytes

    def abort(self) -> None:
        for handle in (self._jsonl, self._csv):
            handle.close()
        for path in self.paths:
            path.unlink(missing_ok=True)


def write_run_record(folder: Path, record: dict, run_id: str) -> Path:
    """The run's record as run.json beside its findings, replaced atomically like them."""
    path = folder / RUN_RECORD
    temporary = path.with_name(f".{path.name}.{run_id}.tmp")
    temporary.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2, default=str) + b"\n")
    os.replace(temporary, path)
    return path
