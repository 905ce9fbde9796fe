"""The benchmark's synthetic tenant is valid input: it loads completely and every rule is exercised.

(Timing belongs to bench/bench_scan.py; this only keeps the generator and the engine in step.)
"""

import json
import sys
from collections import Counter
from pathlib import Path

from auditors.engine import Evaluator
from auditors.pairing import PairsConfig
from auditors.rules import catalog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from synth_estate import generate


def test_synthetic_estate_loads_completely_and_exercises_every_rule(tmp_path):
    from datetime import date

    from auditors.exemptions import load_exemptions
    from auditors.inputs import load_snapshot

    counts = generate(tmp_path, clusters=300, registries=80, role_assignments=5000, subscriptions=40, seed=7)
    loaded = load_snapshot(tmp_path, lambda _message: None)
    inventory = loaded.inventory
    assert loaded.load.rows == sum(counts.values()) and loaded.load.skipped == [] and not inventory.notes
    assert len(inventory.clusters) == 300 and len(inventory.registries) == 80
    assert inventory.role_assignment_count == 5000 and inventory.never_pulling_assignments > 0
    assert inventory.captured_at == "2026-11-29T06:00:00Z" and inventory.deny_listed
    (tmp_path / "exemptions.yaml").write_text(
        "exemptions:\n  - {id: EX-1, rules: [AKS-ACR-006], clusters: {name: aks-0000*}, justification: migration,\n"
        "     approvedBy: secops@example.com, expiresOn: 2027-03-31}\n")
    exemptions = load_exemptions(tmp_path / "exemptions.yaml", rule_ids=[r.meta.id for r in catalog()],
                                 today=date(2026, 11, 29))
    findings = list(Evaluator(inventory, PairsConfig(), run_id="r", time_generated="t", exemptions=exemptions).run())
    seen = {(f.RuleId, f.Status) for f in findings}
    for rule in catalog():
        assert (rule.meta.id, "Pass") in seen, rule.meta.id
    for rule_id in ("AKS-ACR-000", "AKS-ACR-001", "AKS-ACR-002", "AKS-ACR-012"):
        assert (rule_id, "Fail") in seen, rule_id
    assert not [f for f in findings if "Internal error" in f.Message]
    permission = Counter(f.Status for f in findings if f.RuleId == "AKS-ACR-001")
    assert permission["Unknown"] < 0.05 * sum(permission.values()), permission  # groups are resolved


def test_secrets_in_rows_never_reach_findings():
    from tests.helpers import demo_config, demo_rows, evaluate, row

    rows = demo_rows()
    row(rows, "aks-batch-dev")["properties"]["servicePrincipalProfile"]["secret"] = "s3cr3t-value"
    row(rows, "acrcontosoedge")["properties"]["credentials"] = {"password": "s3cr3t-value"}
    findings = evaluate(rows, demo_config())
    assert "s3cr3t-value" not in json.dumps([f.to_record() for f in findings])
