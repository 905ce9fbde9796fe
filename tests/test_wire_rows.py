"""Wire rows: a finding travels (findings.jsonl, the Logs Ingestion body, the archive) without the columns a reader
derives, and every reader gets them all back: `expand` here, the DCR's transformKql in Log Analytics."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditors.findings import (
    FINDING_COLUMNS,
    FINDING_FIELDS,
    LAST_SEGMENT,
    RESOURCE_GROUP_OF,
    SUBSCRIPTION_OF,
    Finding,
    FindingsFileError,
    _last_segment,
    _subscription_and_group,
    encode,
    expand,
    read_records,
    wire_record,
)
from auditors.rules import catalog
from auditors.sinks.tables import FINDINGS_TRANSFORM_FILE, transform_kql
from tests.helpers import demo_config, demo_rows, evaluate

ROOT = Path(__file__).resolve().parent.parent
FUZZ = settings(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow],
                max_examples=300)
DEMO = evaluate(demo_rows(), demo_config())


def as_json(value) -> dict:
    return orjson.loads(orjson.dumps(value))


def test_every_demo_finding_comes_back_whole_from_its_wire_row():
    assert len(DEMO) > 100
    for finding in DEMO:
        line = encode(finding).line
        assert expand(orjson.loads(line)) == as_json(finding.to_record()), finding.FindingId


def test_wire_rows_leave_out_what_is_derived_and_keep_the_rest():
    pair = next(f for f in DEMO if f.Scope == "pair" and f.Status == "Fail")
    wire = wire_record(pair)
    for derived in ("RuleTitle", "Category", "Scope", "Controls", "ResourceId", "SubscriptionId",
                    "ResourceGroup", "ClusterName", "RegistryName", "RegistryLoginServer"):
        assert derived not in wire, derived
    for kept in ("TimeGenerated", "RunId", "FindingId", "RuleId", "Severity", "Status", "ClusterId", "RegistryId",
                 "Message", "Remediation", "PrincipalId", "Owner"):
        assert wire[kept] == getattr(pair, kept), kept
    assert "Exempted" not in wire and "ExemptionExpiresOn" not in wire  # empty: nothing to say
    assert len(encode(pair).line) < len(orjson.dumps(pair.to_record())) - 500


def differing(finding: Finding, **changes) -> Finding:
    values = {name: getattr(finding, name) for name in FINDING_FIELDS}
    return Finding(**(values | changes))


@pytest.mark.parametrize("changes", [
    {"RuleTitle": "A title from an older catalog"},  # a carried-forward finding keeps what it said
    {"Controls": []},
    {"ResourceId": "exemption:EX-1"},
    {"SubscriptionId": ""},  # empty although the id names one: kept empty, not filled in
    {"ClusterName": "Another-Name"},
    {"RegistryLoginServer": "contoso.azurecr.cn"},  # a sovereign cloud's login server
    {"RegistryName": "", "RegistryId": "", "RegistryLoginServer": ""},
    {"Exempted": True, "ExemptionId": "EX-9", "ExemptionExpiresOn": "2027-01-31"},
    {"RuleId": "AKS-ACR-999"},  # not in this catalog: nothing derived, everything written
    {"ClusterId": None, "RegistryId": None},  # a carried-forward record with nulls must still encode
    {"Scope": "registry"},  # the resource id is the cluster's whatever the scope says
    {"RegistryName": "régistry", "RegistryLoginServer": "régistry.azurecr.io"},  # not a name ACR allows
])
def test_a_value_that_differs_from_its_derivation_is_written_out(changes):
    base = next(f for f in DEMO if f.Scope == "pair" and f.RegistryId)
    finding = differing(base, **changes)
    wire = orjson.loads(encode(finding).line)
    for name, value in changes.items():
        if name in ("RuleId", "RegistryLoginServer") or value not in ("", [], False, None) \
                or name == "SubscriptionId":
            assert wire.get(name, "") == value, name
    assert expand(wire) == as_json(finding.to_record())


ids = st.text(st.sampled_from(list("/abcSsuRrGgoepind-0123456789")), max_size=60) | st.builds(
    lambda sub, group, rest: f"/{sub}/{group}/{rest}",
    st.sampled_from(["subscriptions/1f2e", "Subscriptions/ab", "SUBSCRIPTIONS/", "subscription/x",
                     "x/subscriptions/y", "\u017fubscriptions/s"]),  # U+017F: a long s, which (?i) takes for s
    st.sampled_from(["resourceGroups/rg-1", "resourcegroups/", "RESOURCEGROUPS/RG", "providers/x", ""]),
    st.text(st.sampled_from(list("ab/c-")), max_size=20))


@FUZZ
@given(ids)
def test_the_python_derivations_match_the_patterns_the_transform_uses(resource_id):
    def extract(pattern: str) -> str:
        match = re.search(pattern, resource_id)
        return match.group(1) if match else ""

    assert _last_segment(resource_id) == extract(LAST_SEGMENT)
    assert _subscription_and_group(resource_id) == (extract(SUBSCRIPTION_OF), extract(RESOURCE_GROUP_OF))


texts = st.text(st.sampled_from(list("aB/-_ .éZ")), max_size=30)


@FUZZ
@given(rule=st.sampled_from([r.meta.id for r in catalog()] + ["AKS-ACR-404"]),
       cluster=ids, registry=ids, names=st.tuples(texts, texts, texts), resource=ids | st.just(""),
       scope=st.sampled_from(["", "pair", "registry", "cluster", "exemption"]),
       subscription=texts | ids, group=texts, exempted=st.booleans())
def test_any_finding_survives_its_wire_row(rule, cluster, registry, names, resource, scope, subscription, group,
                                           exempted):
    meta = {r.meta.id: r.meta for r in catalog()}.get(rule)
    finding = Finding(
        TimeGenerated="2026-11-30T00:00:00Z", RunId="r", FindingId="f", RuleId=rule,
        RuleTitle=meta.title if meta else names[0], Severity=meta.severity.value if meta else "High",
        Category=meta.category if meta else "", Status="Fail", Scope=scope or (meta.scope.value if meta else ""),
        ClusterId=cluster, ClusterName=names[1], RegistryId=registry, RegistryName=names[2],
        RegistryLoginServer=names[2].lower() + ".azurecr.io", ResourceId=resource, SubscriptionId=subscription,
        ResourceGroup=group, Controls=list(meta.controls) if meta else [], Exempted=exempted,
        Evidence={"k": names[0]})
    assert expand(orjson.loads(encode(finding).line)) == as_json(finding.to_record())


def test_read_records_gives_every_column_of_a_findings_file(tmp_path):
    path = tmp_path / "findings.jsonl"
    path.write_bytes(b"\n".join(encode(f).line for f in DEMO[:20]) + b"\n")
    records = list(read_records(path))
    assert [list(r) for r in records] == [list(FINDING_FIELDS)] * 20
    assert records == [as_json(f.to_record()) for f in DEMO[:20]]


# -- the transform that does the same in Log Analytics -------------------------------------------------------------

def test_the_dcr_transform_file_is_generated_from_the_code():
    assert (ROOT / FINDINGS_TRANSFORM_FILE).read_text(encoding="utf-8") == transform_kql(), \
        "run: python -m auditors.sinks.tables --transform > infra/dcr/findings-transform.kql"


# Azure Monitor transformations accept only the functions its docs list ("Supported KQL features in Azure Monitor
# transformations"); these are the ones the transform may use.
ALLOWED_FUNCTIONS = {"iif", "case", "extract", "strcat", "tolower", "parse_json", "isnull", "todatetime"}


def test_the_transform_uses_only_functions_transformations_allow():
    used = set(re.findall(r"\b([a-z_]+)\(", re.sub(r'"(?:[^"\\]|\\.)*"', '""', transform_kql())))
    assert used and used <= ALLOWED_FUNCTIONS, used - ALLOWED_FUNCTIONS
    assert "coalesce" not in used  # not allowed in transformations


def test_the_transform_gives_what_expand_gives_for_a_column_left_out_empty():
    """In Kusto a string column left out reads "", any other type null; where expand gives something else for
    a column left out (false, an empty list), the transform must put it there."""
    kql = transform_kql()
    for name, kind in FINDING_COLUMNS:
        if name == "Evidence":
            continue  # always sent
        empty = expand({})[name]
        kusto_missing = "" if kind == "string" else None
        if empty != kusto_missing:
            assert re.search(rf"extend {name} = iif\(isnull\({name}\)", kql), name


def test_the_transform_puts_back_every_column_a_wire_row_can_leave_out():
    assigned = set(re.findall(r"(?:extend|,)\s+(\w+) = iif\(\1 (?:==|\w)", transform_kql()))
    assigned |= set(re.findall(r"extend (\w+) = iif\(isnull\(\1\)", transform_kql()))
    rich = next(f for f in DEMO if f.Scope == "pair" and f.RegistryId and f.Controls)
    derivable = {name for name in FINDING_FIELDS if name not in wire_record(rich) and name != "Evidence"
                 and getattr(rich, name) not in ("", None, [], False)}  # left out although it has a value
    assert derivable <= assigned, derivable - assigned
    for rule in catalog():  # each rule's catalog values are in it
        assert f'RuleId == "{rule.meta.id}", {orjson.dumps(rule.meta.title).decode()}' in transform_kql()


def test_expanded_records_do_not_share_the_catalog_lists():
    pair = next(f for f in DEMO if f.Controls)
    first = expand(orjson.loads(encode(pair).line))
    first["Controls"].append("changed by a reader")
    assert expand(orjson.loads(encode(pair).line))["Controls"] == pair.Controls


@pytest.mark.parametrize(("content", "problem"), [
    (b"\x1f\x8b\x08\x00garbage", "cannot read the findings file"),
    (b'{"RuleId": "AKS-ACR-001"\n', "not a JSON finding"),
    (b'{"Status": "Fail"}\n', "not a finding record"),
])
def test_an_unreadable_findings_file_is_one_clear_error(tmp_path, content, problem):
    path = tmp_path / ("findings.jsonl.gz" if content.startswith(b"\x1f\x8b") else "findings.jsonl")
    path.write_bytes(content)
    with pytest.raises(FindingsFileError, match=problem) as raised:
        list(read_records(path))
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    if not content.startswith(b"\x1f\x8b"):  # a damaged line can be skipped; a damaged archive cannot
        assert list(read_records(path, skip_damaged=True)) == []


def test_a_folder_names_its_findings_file_plain_or_gzipped(tmp_path):
    from auditors.findings import findings_file

    assert findings_file(tmp_path) == tmp_path / "findings.jsonl"  # neither: the plain name, for the error
    (tmp_path / "findings.jsonl.gz").write_bytes(b"")
    assert findings_file(tmp_path) == tmp_path / "findings.jsonl.gz"
    (tmp_path / "findings.jsonl").write_bytes(b"")
    assert findings_file(tmp_path) == tmp_path / "findings.jsonl"
    assert findings_file(tmp_path / "x.jsonl") == tmp_path / "x.jsonl"
