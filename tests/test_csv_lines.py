"""findings.csv: the fast line renderer writes exactly what csv.writer writes, formula guard included."""

from __future__ import annotations

import csv
import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditors.findings import FINDING_FIELDS, Finding, csv_cell, encode
from auditors.sinks.csv_lines import CsvLines, header
from tests.helpers import demo_config, demo_rows, evaluate

FUZZ = settings(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow],
                max_examples=300)


def by_csv_module(findings: list[Finding]) -> str:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(FINDING_FIELDS)
    for finding in findings:
        encoded = encode(finding)
        writer.writerow([csv_cell(getattr(finding, name)) for name in FINDING_FIELDS[:-1]]
                        + [encoded.evidence.decode()])
    return text.getvalue()


def by_csv_lines(findings: list[Finding]) -> str:
    lines = CsvLines()
    return header() + "".join(lines.line(encode(f)) for f in findings)


def test_demo_findings_render_as_the_csv_module_renders_them():
    findings = evaluate(demo_rows(), demo_config())
    assert len(findings) > 100
    assert by_csv_lines(findings) == by_csv_module(findings)


awkward = st.text(st.sampled_from(list('a,"\r\n=+-@\t \';é')), max_size=12)


@FUZZ
@given(st.lists(st.tuples(awkward, awkward, awkward, awkward, st.booleans(), st.sampled_from(["Pass", "Fail"])),
                min_size=1, max_size=6))
def test_any_text_renders_as_the_csv_module_renders_it(values):
    findings = [Finding(TimeGenerated="2026-11-30T00:00:00Z", RunId="r", FindingId=f"f{i}", RuleId="AKS-ACR-001",
                        RuleTitle=title, Severity="High", Category="Identity", Status=status, Scope="pair",
                        ClusterId="/subscriptions/s/resourceGroups/g/providers/x/c", ClusterName=name, Owner=owner,
                        Message=message, Remediation=message * 2, Controls=[title, owner], Exempted=exempted,
                        Evidence={"text": message})
                for i, (title, name, owner, message, exempted, status) in enumerate(values)]
    findings += findings[:2]  # repeated groups come from what was rendered before
    assert by_csv_lines(findings) == by_csv_module(findings)
