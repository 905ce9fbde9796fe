"""Run KQL through the Kusto language service (node + @kusto/language-service-next)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("validate.js")
PACKAGE = ROOT / "node_modules" / "@kusto" / "language-service-next"


def available() -> str:
    """'' when the language service can run here, else why not."""
    if not shutil.which("node"):
        return "node is not installed"
    if not PACKAGE.exists():
        return "run `npm install` (the Kusto language service is not installed)"
    return ""


def schema(columns: dict[str, str]) -> str:
    """Kusto schema text; names are quoted so that keywords (`kind`, `plan`, `type`) stay column names."""
    return "(" + ", ".join(f"['{name}']:{kind}" for name, kind in columns.items()) + ")"


def analyse(tables: dict[str, dict[str, str]], queries: dict[str, str]) -> dict[str, dict]:
    payload = {"tables": {name: schema(columns) for name, columns in tables.items()},
               "queries": [{"name": n, "text": t} for n, t in queries.items()]}
    result = subprocess.run(["node", str(SCRIPT)], input=json.dumps(payload), capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=True)
    return {item["name"]: item for item in json.loads(result.stdout)}


def errors(result: dict) -> list[str]:
    return [f"{d['code']} {d['message']} @{d['start']}" for d in result["diagnostics"] if d["severity"] == "Error"]
