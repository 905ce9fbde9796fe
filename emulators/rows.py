"""The emulators' own reader of snapshot files: JSON arrays, `{"data": [...]}` documents and JSON Lines, as
they lie on disk. It does not normalise or repair rows (the auditor's loader does that), so an emulator
serves what a snapshot holds, as the real service would, and a drift in the auditor's parsing shows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

SUFFIXES = (".json", ".jsonl", ".ndjson")


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or directory")
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                  and p.name.lower() != "manifest.json")


def read_rows(path: str | Path) -> Iterator[dict]:
    """Every JSON object row under `path`."""
    for file in _files(Path(path)):
        text = file.read_text(encoding="utf-8-sig")
        if file.suffix.lower() != ".json":
            documents = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            try:
                documents = [json.loads(text)] if text.strip() else []
            except json.JSONDecodeError:  # JSON Lines saved as .json
                documents = [json.loads(line) for line in text.splitlines() if line.strip()]
        for document in documents:
            items = document.get("data") if isinstance(document, dict) and "data" in document else document
            for item in items if isinstance(items, list) else [items]:
                if isinstance(item, dict):
                    yield item


def row_type(row: dict) -> str:
    value = row.get("type")
    return value.lower() if isinstance(value, str) else ""
