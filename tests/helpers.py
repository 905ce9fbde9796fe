"""Test estates: the demo tenant's rows (from tools/build_demo.py), mutated per scenario, then evaluated."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from auditors.engine import Evaluator
from auditors.findings import Finding
from auditors.inputs import apply_sources, capture_time, demo_path
from auditors.model import Inventory
from auditors.pairing import PairsConfig, load_pairs_file
from auditors.sources.snapshot import ID_LESS_TYPES, normalise_row
from tools import build_demo


@cache
def _demo_rows() -> tuple[dict, ...]:
    files = build_demo.build()
    rows = [*files["resources.json"], *files["resourcecontainers.json"]["data"], *files["authorizationresources.jsonl"],
            *files["deny_assignments.jsonl"], *files["microsoft_graph.jsonl"], *files["container_insights.jsonl"]]
    return tuple(rows)


def demo_rows() -> list[dict]:
    """A fresh, mutable copy of every demo row."""
    return copy.deepcopy(list(_demo_rows()))


def demo_config() -> PairsConfig:
    return load_pairs_file(demo_path() / "pairs.yaml")


def row(rows: list[dict], name: str, type_suffix: str = "") -> dict:
    matches = [r for r in rows if r.get("name") == name and r.get("type", "").endswith(type_suffix)]
    assert len(matches) == 1, f"expected one row named {name!r} ({type_suffix}), found {len(matches)}"
    return matches[0]


def evaluate(rows: list[dict], config: PairsConfig | None = None, manifest: dict | None = None,
             exemptions=None) -> list[Finding]:
    """Findings for these rows, read as a snapshot with `manifest` (default: the demo's, so the moment verdicts
    are made for and what the sources beyond Resource Graph covered are the demo's)."""
    evaluator = Evaluator(snapshot_inventory(rows, manifest), config or PairsConfig(), run_id="test-run",
                          time_generated="2026-11-29T00:00:00Z", exemptions=exemptions)
    return list(evaluator.run())


def snapshot_inventory(rows: list[dict], manifest: dict | None = None) -> Inventory:
    """These rows as a snapshot with `manifest` (default: the demo's) loads them."""
    manifest = build_demo.manifest() if manifest is None else manifest
    inventory = Inventory.from_rows(_as_loaded(r) for r in rows)
    coverage = manifest.get("coverage") or {}
    apply_sources(inventory, coverage.get("sources") or {}, coverage.get("permissions") or {})
    inventory.captured_at = capture_time(manifest)
    return inventory


def manifest_without(*sources: str) -> dict:
    """The demo's manifest as if these sources (deny, graph, insights) had not been collected."""
    manifest = build_demo.manifest()
    coverage = manifest["coverage"]
    for source in sources:
        coverage["sources"].pop(_MANIFEST_SOURCES[source], None)
        if source == "graph":
            coverage["permissions"] = {k: v for k, v in coverage["permissions"].items() if not k.endswith(".All")}
        else:
            coverage["permissions"].pop(_MANIFEST_SOURCES[source], None)
    return manifest


def _as_loaded(row: dict) -> dict:
    declared = str(row.get("type", "")).lower()
    return {**row, "type": declared} if declared.startswith(ID_LESS_TYPES) else normalise_row(row)


def verdict(findings: list[Finding], rule_id: str, subject: str, registry: str = "") -> Finding:
    """The single finding of `rule_id` for a cluster or registry name (and registry, for pair rules)."""
    matches = [
        f for f in findings
        if f.RuleId == rule_id
        and (f.ClusterName == subject or (not f.ClusterName and f.RegistryName == subject))
        and (not registry or f.RegistryName == registry)
    ]
    assert len(matches) == 1, f"{rule_id} {subject} {registry}: {len(matches)} findings"
    return matches[0]


def run_scan(snapshot, out_dir, *, pairs_file=None, run_id=None, collector=None, progress=None, services=None):
    """One local scan through the pipeline, as `python -m auditors scan` does: a snapshot (or the demo
    folder), or live collection with `collector` when `snapshot` is None. Without `services`, live runs ask
    Resource Graph only (the other sources are off)."""
    from auditors.pipeline import RunRequest, run_audit
    from auditors.settings import Settings

    settings = Settings(out_dir=str(out_dir), pairs_file=str(pairs_file or ""), graph=False, deny_assignments=False,
                        container_insights=False)
    if services is not None:
        settings = replace(services.settings, out_dir=str(out_dir), pairs_file=str(pairs_file or ""))
        services.settings = settings
    source = "live" if snapshot is None else "snapshot"
    outcome = run_audit(settings, RunRequest(source, snapshot, run_id, collector), progress=progress,
                        services=services)
    if outcome.error is not None:
        raise outcome.error
    return outcome


RESOURCE_GRAPH_FILES = ("resources.json", "resourcecontainers.json", "authorizationresources.jsonl")
SOURCE_FILES = {"deny": "deny_assignments.jsonl", "graph": "microsoft_graph.jsonl",
                "insights": "container_insights.jsonl"}
_MANIFEST_SOURCES = {"deny": "denyAssignments", "graph": "microsoftGraph", "insights": "containerInsights"}
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def demo_copy(folder: Path, *, sources=("deny", "graph", "insights"), captured_at: datetime | None = None) -> Path:
    """The demo estate written to `folder` with only the chosen sources beyond Resource Graph (its manifest says
    so), every time stamp shifted so that it was captured at `captured_at` (default: the demo's own moment). A
    live run against emulators serving this copy at that moment sees exactly what a scan of the copy sees."""
    folder.mkdir(parents=True, exist_ok=True)
    files = build_demo.files()
    moment = datetime.fromisoformat(build_demo.CAPTURED_AT.replace("Z", "+00:00"))
    delta = (captured_at - moment) if captured_at else timedelta(0)

    def shift(text: str) -> str:
        return _STAMP.sub(lambda m: (datetime.fromisoformat(m.group(0).replace("Z", "+00:00")) + delta)
                          .strftime("%Y-%m-%dT%H:%M:%SZ"), text) if delta else text

    for name in RESOURCE_GRAPH_FILES + tuple(SOURCE_FILES[s] for s in sources) + ("pairs.yaml",):
        (folder / name).write_text(shift(build_demo.render(name, files[name]) if name in files else
                                         (demo_path() / name).read_text()), encoding="utf-8")
    manifest = files["manifest.json"]
    kept = {_MANIFEST_SOURCES[s] for s in sources}
    coverage = manifest["coverage"]
    coverage["sources"] = {k: v for k, v in coverage["sources"].items() if k in kept}
    graph_kept = "graph" in sources
    coverage["permissions"] = {k: v for k, v in coverage["permissions"].items()
                               if k in kept or (graph_kept and k.endswith(".Read.All"))}
    (folder / "manifest.json").write_text(shift(json.dumps(manifest, indent=1)), encoding="utf-8")
    return folder


def add_twin_cluster(snapshot: Path, name: str) -> dict:
    """A second cluster named `name` in another resource group (`rg-<name>-2`), written into the snapshot."""
    resources = json.loads((snapshot / "resources.json").read_text())
    twin = copy.deepcopy(next(r for r in resources if r["name"] == name))
    twin["id"] = twin["id"].replace(f"rg-{name}", f"rg-{name}-2")
    twin["resourceGroup"] = f"rg-{name}-2"
    (snapshot / "twin.jsonl").write_text(json.dumps(twin) + "\n")
    return twin


def account_sas(azurite: str) -> tuple[dict[str, str], str, str]:
    """The Azurite connection string's fields, an account SAS for its account, and the SAS's signature."""
    from datetime import UTC

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    fields = dict(part.split("=", 1) for part in azurite.strip(";").split(";"))
    sas = generate_account_sas("devstoreaccount1", fields["AccountKey"],
                               ResourceTypes(service=True, container=True, object=True),
                               AccountSasPermissions(read=True, write=True, list=True, create=True, add=True,
                                                     delete=True), expiry=datetime.now(UTC) + timedelta(hours=1))
    return fields, sas, dict(p.split("=", 1) for p in sas.split("&"))["sig"]
