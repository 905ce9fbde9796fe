"""Findings as JSON Lines and CSV in an output folder, replaced atomically.

Each run writes temporary files named after itself beside the final ones and renames them into place only
when every finding is written, so a failed or concurrent run never leaves a half-written or mixed file, and
the previous run's files stay until the new ones are complete.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

import orjson

from auditors.findings import EncodedFinding
from auditors.sinks.base import SinkStats
from auditors.sinks.csv_lines import CsvLines, header

FINDINGS_JSONL, FINDINGS_CSV, RUN_RECORD = "findings.jsonl", "findings.csv", "run.json"


class OutputFolderError(ValueError):
    """The output folder (or the run's scratch folder) cannot be used; the message names it and why."""


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
        self._writeback = [_Writeback(self._jsonl), _Writeback(self._csv)]
        self.stats = SinkStats(self.name)

    def write(self, batch: list[EncodedFinding]) -> None:
        self.stats.bytes += _write_lines(batch, self._jsonl, self._csv, self._csv_lines)
        self.stats.rows += len(batch)
        for writeback in self._writeback:
            writeback()

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

    def discard(self, finished: tuple[list[str], int, int]) -> None:
        for part in finished[0]:
            Path(part).unlink(missing_ok=True)

    def _discard_parts(self) -> None:
        for path in self.paths:
            for part in self.folder.glob(f".{path.name}.{self.run_id}.part*.tmp"):
                part.unlink(missing_ok=True)

    def close(self) -> SinkStats:
        for writeback in self._writeback:
            writeback(everything=True)
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


# The kernel is asked to start writing a findings file's pages to disk every this many bytes (without waiting), so
# that the fsync which makes the file durable before it replaces the previous one waits for little: otherwise it
# waits for every byte at the end (0.8 s of a 16 s scan of the synthetic estate).
WRITEBACK_BYTES = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range():
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError, TypeError):  # not Linux (Windows: no CDLL(None)): the fsync does all the waiting
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return function


_start_writing = _sync_file_range()


class _Writeback:
    def __init__(self, handle) -> None:
        self.handle, self.started = handle, 0

    def __call__(self, everything: bool = False) -> None:
        end = self.handle.tell()
        if _start_writing is None or end - self.started < (1 if everything else WRITEBACK_BYTES):
            return
        self.handle.flush()
        _start_writing(self.handle.fileno(), self.started, end - self.started, _SYNC_FILE_RANGE_WRITE)
        self.started = end


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
