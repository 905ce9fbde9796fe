"""Test estates: the demo tenant's rows (from tools/build_demo.py), mutated per scenario, then evaluated."""

from __future__ import annotations

import copy
from functools import cache

from auditors.engine import Evaluator
from auditors.findings import Finding
from auditors.inputs import demo_path
from auditors.model import Inventory
from auditors.pairing import PairsConfig, load_pairs_file
from auditors.sources.snapshot import normalise_row
from tools import build_demo


@cache
def _demo_rows() -> tuple[dict, ...]:
    files = build_demo.build()
    rows = [*files["resources.json"], *files["resourcecontainers.json"]["data"], *files["authorizationresources.jsonl"]]
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


def evaluate(rows: list[dict], config: PairsConfig | None = None) -> list[Finding]:
    inventory = Inventory.from_rows(normalise_row(r) for r in rows)
    evaluator = Evaluator(inventory, config or PairsConfig(), run_id="test-run", time_generated="2026-11-29T00:00:00Z")
    return list(evaluator.run())


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


def run_scan(snapshot, out_dir, *, pairs_file=None, run_id=None, collector=None, progress=None):
    """One local scan through the pipeline, as `python -m auditors scan` does: a snapshot (or the demo
    folder), or live collection with `collector` when `snapshot` is None."""
    from auditors.pipeline import RunRequest, run_audit
    from auditors.settings import Settings

    settings = Settings(out_dir=str(out_dir), pairs_file=str(pairs_file or ""))
    source = "live" if snapshot is None else "snapshot"
    outcome = run_audit(settings, RunRequest(source, snapshot, run_id, collector), progress=progress)
    if outcome.error is not None:
        raise outcome.error
    return outcome
