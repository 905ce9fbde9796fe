"""The benchmark's synthetic tenant is valid input: it loads completely and every rule is exercised.

(Timing belongs to bench/bench_scan.py; this only keeps the generator and the engine in step.)
"""

import json
import sys
from pathlib import Path

from auditors.engine import Evaluator
from auditors.model import Inventory
from auditors.pairing import PairsConfig
from auditors.rules import catalog
from auditors.sources.snapshot import LoadReport, iter_snapshot

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from synth_estate import generate


def test_synthetic_estate_loads_completely_and_exercises_every_rule(tmp_path):
    counts = generate(tmp_path, clusters=300, registries=80, role_assignments=5000, subscriptions=40, seed=7)
    report = LoadReport()
    inventory = Inventory.from_rows(iter_snapshot(tmp_path, report))
    assert report.rows == sum(counts.values()) and report.skipped == []
    assert len(inventory.clusters) == 300 and len(inventory.registries) == 80
    assert inventory.role_assignment_count == 5000 and inventory.never_pulling_assignments > 0
    findings = list(Evaluator(inventory, PairsConfig(), run_id="r", time_generated="t").run())
    seen = {(f.RuleId, f.Status) for f in findings}
    for rule in catalog():
        assert (rule.meta.id, "Pass") in seen, rule.meta.id
    assert not [f for f in findings if "Internal error" in f.Message]


def test_secrets_in_rows_never_reach_findings():
    from tests.helpers import demo_config, demo_rows, evaluate, row

    rows = demo_rows()
    row(rows, "aks-batch-dev")["properties"]["servicePrincipalProfile"]["secret"] = "s3cr3t-value"
    row(rows, "acrcontosoedge")["properties"]["credentials"] = {"password": "s3cr3t-value"}
    findings = evaluate(rows, demo_config())
    assert "s3cr3t-value" not in json.dumps([f.to_record() for f in findings])
