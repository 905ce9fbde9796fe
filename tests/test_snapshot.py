"""Snapshot input: accepted shapes, and clear errors (file, line/row, problem) for unusable input."""

import json

import pytest

from auditors.arm import norm_location, type_from_id
from auditors.engine import Evaluator
from auditors.model import Inventory
from auditors.pairing import PairsConfig
from auditors.sources.snapshot import LoadReport, SnapshotError, iter_snapshot, table_of

REGISTRY = {"id": "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/"
                  "Microsoft.ContainerRegistry/registries/acr1",
            "name": "acr1", "type": "microsoft.containerregistry/registries", "location": "westeurope",
            "sku": {"name": "Premium"}, "properties": {"adminUserEnabled": True}}
SUBSCRIPTION = {"id": "/subscriptions/11111111-1111-1111-1111-111111111111",
                "type": "microsoft.resources/subscriptions",
                "subscriptionId": "11111111-1111-1111-1111-111111111111",
                "properties": {"managementGroupAncestorsChain": [{"name": "mg1"}, {"name": "root"}]}}


def load(path):
    return Inventory.from_rows(iter_snapshot(path))


@pytest.mark.parametrize("shape", ["array", "az-graph", "rest", "table", "single", "jsonl", "jsonl-in-json"])
def test_accepted_shapes(tmp_path, shape):
    rows = [REGISTRY, SUBSCRIPTION]
    if shape == "array":
        text, name = json.dumps(rows), "rows.json"
    elif shape == "az-graph":
        text, name = json.dumps({"count": 2, "data": rows, "skip_token": None, "total_records": 2}), "rows.json"
    elif shape == "rest":
        text, name = json.dumps({"totalRecords": 2, "count": 2, "resultTruncated": "false", "data": rows}), "r.json"
    elif shape == "table":
        columns = ["id", "name", "type", "location", "sku", "properties", "subscriptionId"]
        table = {"columns": [{"name": c, "type": "string"} for c in columns],
                 "rows": [[r.get(c) for c in columns] for r in rows]}
        text, name = json.dumps({"data": table}), "rows.json"
    elif shape == "single":
        (tmp_path / "sub.json").write_text(json.dumps(SUBSCRIPTION))
        text, name = json.dumps(REGISTRY), "registry.json"
    elif shape == "jsonl":
        text, name = "\n".join(json.dumps(r) for r in rows) + "\n", "rows.jsonl"
    else:
        text, name = "\n".join(json.dumps(r) for r in rows), "rows.json"
    (tmp_path / name).write_text(text)
    report = LoadReport()
    inventory = Inventory.from_rows(iter_snapshot(tmp_path, report))
    assert report.tables == {"resources": 1, "resourcecontainers": 1}  # the table follows from the type
    assert list(inventory.registries) == [REGISTRY["id"].lower()]
    assert inventory.subscriptions["11111111-1111-1111-1111-111111111111"].ancestors == ["mg1", "root"]


def test_pascal_case_export_with_nested_children(tmp_path):
    export = [{"Id": REGISTRY["id"], "Name": "acr1", "Location": "West Europe", "Type": "Microsoft.ContainerRegistry/"
               "registries", "Sku": {"Name": "Premium"}, "Properties": {"adminUserEnabled": True},
               "ResourceGroupName": "rg", "SubscriptionId": "11111111-1111-1111-1111-111111111111",
               "resources": [{"Id": REGISTRY["id"] + "/replications/northeurope", "Location": "North Europe",
                              "Type": "Microsoft.ContainerRegistry/registries/replications"},
                             {"name": "Size", "type": "Microsoft.ContainerRegistry/registries/listUsages"}]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    report = LoadReport()
    inventory = Inventory.from_rows(iter_snapshot(tmp_path, report))
    registry = next(iter(inventory.registries.values()))
    assert registry.sku == "Premium" and registry.admin_user_enabled is True
    assert registry.location == "westeurope" and registry.replica_locations == ["northeurope"]
    assert report.skipped == [f"{tmp_path / 'export.json'}[0].resources[1]: row has no `id`"]


def test_table_and_type_come_from_the_id():
    assert table_of("microsoft.authorization/roleassignments") == "authorizationresources"
    assert table_of("microsoft.resources/subscriptions") == "resourcecontainers"
    assert table_of("microsoft.containerservice/managedclusters") == "resources"
    assert type_from_id("/providers/Microsoft.Management/managementGroups/mg/providers/Microsoft.Authorization/"
                        "roleAssignments/x") == "microsoft.authorization/roleassignments"
    assert type_from_id(REGISTRY["id"] + "/replications/eu") == "microsoft.containerregistry/registries/replications"
    assert type_from_id("/subscriptions/x") == ""


@pytest.mark.parametrize(("spelling", "canonical"), [("East US", "eastus"), ("eastus", "eastus"),
                                                    ("EAST-US", "eastus"), (" West Europe ", "westeurope"),
                                                    (None, "")])
def test_location_spellings(spelling, canonical):
    assert norm_location(spelling) == canonical


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("bad.json", '[{"id": "/subscriptions/x"},\n  {"id": oops}]', "bad.json: line 2 column 10: invalid JSON"),
    ("bad.jsonl", '{"id": "/subscriptions/x", "type": "t"}\n{"id": \n', "bad.jsonl: line 2: invalid JSON Lines"),
    ("shape.json", '{"value": []}', "shape.json: unknown shape: object without a `data` array"),
    ("scalar.json", '"hello"', "scalar.json: unknown shape: top-level JSON str"),
    ("noids.json", '[{"name": "a"}, {"name": "b"}]', "noids.json: unknown shape: no Azure resource rows"),
    ("template.json", '{"$schema": "x", "contentVersion": "1.0.0.0", "resources": []}', "ARM template"),
])
def test_bad_files_name_the_file_and_problem(tmp_path, name, content, expected):
    (tmp_path / name).write_text(content)
    with pytest.raises(SnapshotError) as error:
        list(iter_snapshot(tmp_path / name))
    assert expected in str(error.value)
    assert str(tmp_path / name) in str(error.value)


def test_empty_snapshot_and_missing_paths(tmp_path):
    with pytest.raises(SnapshotError, match=r"no \.json, \.jsonl or \.ndjson files"):
        list(iter_snapshot(tmp_path))
    (tmp_path / "empty.json").write_text('{"data": []}')
    with pytest.raises(SnapshotError, match="empty snapshot"):
        list(iter_snapshot(tmp_path))
    with pytest.raises(SnapshotError, match="no such file"):
        list(iter_snapshot(tmp_path / "nope"))


def test_empty_query_result_file_is_fine_next_to_real_rows(tmp_path):
    (tmp_path / "natgateways.json").write_text('{"data": []}')
    (tmp_path / "registries.json").write_text(json.dumps([REGISTRY]))
    assert len(load(tmp_path).registries) == 1


def test_manifest_is_not_read_as_rows(tmp_path):
    (tmp_path / "manifest.json").write_text('{"tool": "acr-pull-auditor"}')
    (tmp_path / "registries.json").write_text(json.dumps([REGISTRY]))
    assert len(load(tmp_path).registries) == 1


def test_unexpected_row_shapes_do_not_crash(tmp_path):
    odd = [
        {**REGISTRY, "properties": "not-an-object", "sku": "Premium", "tags": ["x"]},
        {"id": "/subscriptions/1/resourceGroups/g/providers/Microsoft.ContainerService/managedClusters/c",
         "type": "microsoft.containerservice/managedclusters", "properties": {"agentPoolProfiles": "x",
                                                                             "networkProfile": 5}},
        {"id": "/subscriptions/1/providers/Microsoft.Authorization/roleAssignments/a",
         "type": "microsoft.authorization/roleassignments", "properties": {"principalId": 7}},
        {"id": "/providers/Microsoft.Authorization/roleDefinitions/nope",
         "type": "microsoft.authorization/roledefinitions"},
        {"id": "/subscriptions/1/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v",
         "type": "microsoft.network/virtualnetworks",
         "properties": {"subnets": [None, 3], "virtualNetworkPeerings": {}}},
        17,
    ]
    (tmp_path / "odd.json").write_text(json.dumps(odd))
    report = LoadReport()
    inventory = Inventory.from_rows(iter_snapshot(tmp_path, report))
    assert len(inventory.registries) == 1 and len(inventory.clusters) == 1
    assert any("row is a JSON int" in s for s in report.skipped)
    assert any("no GUID" in n for n in inventory.notes)
    findings = list(Evaluator(inventory, PairsConfig(), run_id="r", time_generated="t").run())
    assert {f.RuleId for f in findings} >= {"AKS-ACR-005", "AKS-ACR-006", "AKS-ACR-007", "AKS-ACR-009"}
    assert not any("Internal error" in f.Message for f in findings)


def test_a_file_is_cut_at_line_starts_and_its_ranges_hold_every_line_once(tmp_path):
    import random
    from itertools import chain, pairwise

    from auditors.sources.snapshot import _consecutive_ranges, _lines_until, line_starts

    rng = random.Random(5)
    lines = [b"x" * rng.randrange(0, 300) + b"\n" for _ in range(2000)] + [b"last line without newline"]
    data = b"".join(lines)
    path = tmp_path / "rows.jsonl"
    path.write_bytes(data)
    starts = {0} | {sum(map(len, lines[:i])) for i in range(1, len(lines) + 1)}
    for parts in (1, 2, 3, 7, 64, 5000):
        offsets = line_starts(path, parts)
        assert offsets[0] == 0 and offsets[-1] == len(data) and offsets == sorted(set(offsets))
        assert set(offsets) <= starts | {len(data)}, parts
        assert len(offsets) <= parts + 1 and (len(offsets) == parts + 1 or parts > len(lines) // 4)
        read = []
        with path.open("rb") as handle:
            for start, stop in pairwise(offsets):
                handle.seek(start)
                read += list(_lines_until(handle, stop - start))
        assert read == lines, parts
        lengths = [stop - start for start, stop in pairwise(offsets)]
        for first in {1, len(lengths) // 2, len(lengths)} - {0}:  # the run's own pieces: in turn on one handle
            with path.open("rb") as handle:
                read = list(chain.from_iterable(_consecutive_ranges(handle, lengths[:first])))
            assert read == data[:offsets[first]].splitlines(keepends=True), (parts, first)
