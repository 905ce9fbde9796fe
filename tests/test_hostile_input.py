"""Hostile and broken input: snapshots, manifests, pairs files, run ids, settings, tags and rows crafted to
break the auditor. Each case checks the exit code, a one-line error without a traceback, and that a failed
scan leaves the previous run's output in its --out folder byte for byte."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditors.findings import read_records
from auditors.inputs import demo_path
from auditors.pairing import MAX_DECLARED_REGISTRIES, PAIR_TAG
from auditors.sources.credentials import StaticTokenCredential
from auditors.sources.resource_graph import ResourceGraphCollector
from emulators.arg import Faults, ResourceGraphEmulator
from tests.helpers import demo_copy, run_scan

ROOT = Path(__file__).resolve().parent.parent
PAYMENTS, SHARED = "aks-payments-prod", "acrcontososhared"
# The demo's only grant of pull to aks-payments-prod's kubelet identity on acrcontososhared: AcrPull at the
# registry's own scope.
PAYMENTS_ACRPULL = "3a2ad9f3-7e89-5543-af28-945c49b2e2a6"
READER_GUID = "acdd72a7-3385-48ef-bd42-f606fba81ae7"  # built-in Reader
UNRELATED_GUID = "00000000-1111-2222-3333-444444444444"  # a role definition that exists nowhere
T_CLUSTER, T_REGISTRY = "microsoft.containerservice/managedclusters", "microsoft.containerregistry/registries"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIT_", "AZURE_", "LOGS_"))}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "auditors", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=environment)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit `code`, stderr exactly one line saying `error: ...` (argparse prefixes the program name), no
    traceback; returns that line."""
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(("error: ", "python -m auditors scan: error: ")), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def previous_out(tmp_path_factory) -> Path:
    """The output folder of an earlier, successful scan of the demo."""
    out = tmp_path_factory.mktemp("previous") / "out"
    result = cli("scan", "--demo", "--out", str(out), "--quiet", "--run-id", "previous-run")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def out_dir(previous_out, tmp_path) -> Path:
    """A fresh copy of the earlier scan's output folder, to scan into."""
    out = tmp_path / "out"
    shutil.copytree(previous_out, out)
    return out


def snapshot_of(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def scan_into(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A quiet scan into `out`, checking afterwards that a failed scan left the earlier output untouched."""
    before = snapshot_of(out)
    result = cli("scan", *args, "--out", str(out), "--quiet", env=env)
    if result.returncode not in (0, 1, 3):
        assert snapshot_of(out) == before, "a failed scan changed the previous run's output"
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "temporary files left behind"
    return result


def read_findings(out: Path) -> list[dict]:
    return list(read_records(out / "findings.jsonl"))


def resources(snapshot: Path) -> list[dict]:
    return json.loads((snapshot / "resources.json").read_text(encoding="utf-8"))


def write_resources(snapshot: Path, rows: list[dict]) -> None:
    (snapshot / "resources.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


def named(rows: list[dict], name: str, row_type: str = T_CLUSTER) -> dict:
    [match] = [r for r in rows if r.get("name") == name and r.get("type") == row_type]
    return match


def verdicts(records: list[dict], rule_id: str, cluster: str, registry: str) -> list[dict]:
    return [r for r in records if r["RuleId"] == rule_id and r["ClusterName"] == cluster
            and r["RegistryName"] == registry]


# -- unusable snapshot files -------------------------------------------------------------------------------------


def _lone_surrogate_in_a_tag(snapshot: Path) -> tuple[str, str]:
    text = (snapshot / "resources.json").read_text(encoding="utf-8")
    at = text.index('"owner": "team-payments"')
    (snapshot / "resources.json").write_text(text.replace('"owner": "team-payments"', '"owner": "team\\ud800pay"', 1),
                                             encoding="utf-8")
    return "resources.json", f"line {text.count(chr(10), 0, at) + 1} "


def _lone_surrogate_in_json_lines(snapshot: Path) -> tuple[str, str]:
    path = snapshot / "authorizationresources.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[-1] = lines[-1][:-1] + ',"tags":{"owner":"a\\ud800b"}}'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "authorizationresources.jsonl", f"line {len(lines)}:"


def _writes(name: str, file: str, text: str, where: str):
    """A damage that writes `text` as `file` into the snapshot; the error names the file and `where`."""
    def damage(snapshot: Path) -> tuple[str, str]:
        (snapshot / file).write_text(text, encoding="utf-8")
        return file, where

    damage.__name__ = name
    return damage


_columns_not_a_list = _writes("columns_not_a_list", "table.json", '{"data":{"columns":5}}', "unknown shape")
_columns_not_a_list_with_rows = _writes("columns_not_a_list_with_rows", "table.json",
                                        '{"data":{"columns":5,"rows":[["x"]]}}', "`data.columns`")


def _integer_of_5000_digits(snapshot: Path) -> tuple[str, str]:
    row = named(resources(snapshot), PAYMENTS)
    text = json.dumps([row])[:-2] + ', "big": ' + "7" * 5000 + "}]"
    (snapshot / "big.json").write_text(text, encoding="utf-8")
    return "big.json", "line 1 "


def _integer_of_5000_digits_in_json_lines(snapshot: Path) -> tuple[str, str]:
    path = snapshot / "authorizationresources.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0][:-1] + ',"big":' + "9" * 5000 + "}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "authorizationresources.jsonl", "line 1:"


_nesting_100000_deep = _writes("nesting_100000_deep", "deep.json", "[" * 100_000, "line 1 ")
_nesting_100000_deep_closed = _writes("nesting_100000_deep_closed", "deep.json", "[" * 100_000 + "]" * 100_000,
                                      "line 1 ")
_nesting_100000_deep_json_lines = _writes("nesting_100000_deep_json_lines", "deep.jsonl", "[" * 100_000 + "\n",
                                          "line 1:")
_manifest_not_json, _manifest_a_list, _manifest_coverage_a_list, _manifest_coverage_a_string, \
    _manifest_coverage_parts_wrong, _manifest_sources_wrong = (
        _writes(name, "manifest.json", text, "unreadable manifest") for name, text in (
            ("manifest_not_json", "this is not JSON {"),
            ("manifest_a_list", '[{"coverage": {}}]'),
            ("manifest_coverage_a_list", '{"coverage": [1, 2]}'),
            ("manifest_coverage_a_string", '{"coverage": "complete"}'),
            ("manifest_coverage_parts_wrong", '{"coverage": {"gaps": "none", "sources": [1]}}'),
            ("manifest_sources_wrong", '{"coverage": {"gaps": [1], "sources": {"microsoftGraph": "x"}}}')))


@pytest.mark.parametrize("damage", [
    _lone_surrogate_in_a_tag, _lone_surrogate_in_json_lines, _columns_not_a_list, _columns_not_a_list_with_rows,
    _integer_of_5000_digits, _integer_of_5000_digits_in_json_lines, _nesting_100000_deep,
    _nesting_100000_deep_closed, _nesting_100000_deep_json_lines, _manifest_not_json, _manifest_a_list,
    _manifest_coverage_a_list, _manifest_coverage_a_string, _manifest_coverage_parts_wrong, _manifest_sources_wrong,
], ids=lambda f: f.__name__.strip("_"))
def test_unusable_snapshot_file_is_exit_2_naming_the_file_and_keeps_the_previous_output(tmp_path, out_dir, damage):
    snapshot = demo_copy(tmp_path / "snapshot")
    name, where = damage(snapshot)
    result = scan_into(out_dir, "--snapshot", str(snapshot), "--pairs", str(snapshot / "pairs.yaml"))
    line = assert_one_line_error(result, 2, f"error: {snapshot / name}: ", where)
    assert len(line) < 1000


# -- pairs files --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("registries", ["5", "true", "{a: 1}", "[1, 2]", "[]", "null"])
def test_pairs_file_registries_of_the_wrong_type_is_exit_2_naming_file_and_key(tmp_path, out_dir, registries):
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(f'pairs:\n  - clusters: {{name: "aks-*"}}\n    registries: {registries}\n', encoding="utf-8")
    result = scan_into(out_dir, "--demo", "--pairs", str(pairs))
    assert_one_line_error(result, 2, str(pairs), "pairs[0]", "registries")


@pytest.mark.parametrize("entry", ["{1: x, clusters: {name: a}, registries: [r]}",
                                   "{null: x, clusters: {name: a}, registries: [r]}",
                                   "{clusters: {2020-01-01: a}, registries: [r]}"],
                         ids=["int-key", "null-key", "date-key-in-clusters"])
def test_pairs_file_with_a_non_string_key_is_exit_2(tmp_path, out_dir, entry):
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(f"pairs:\n  - {entry}\n", encoding="utf-8")
    result = scan_into(out_dir, "--demo", "--pairs", str(pairs))
    assert_one_line_error(result, 2, str(pairs), "pairs[0]", "unknown key")
    without_quiet = cli("scan", "--demo", "--pairs", str(pairs), "--out", str(out_dir))
    assert "Traceback" not in without_quiet.stderr


# -- CSV formula injection ---------------------------------------------------------------------------------------

FORMULAS = {"aks-payments-prod": '=HYPERLINK("x")', "aks-orders-prod": "+1", "aks-web-eastus": "-1",
            "aks-analytics": "@SUM(1)"}


@pytest.fixture(scope="module")
def formula_scan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formula")
    snapshot = demo_copy(folder / "snapshot")
    rows = resources(snapshot)
    for cluster, payload in FORMULAS.items():
        named(rows, cluster)["tags"]["owner"] = payload
    write_resources(snapshot, rows)
    result = cli("scan", "--snapshot", str(snapshot), "--pairs", str(snapshot / "pairs.yaml"), "--out",
                 str(folder / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    with (folder / "out" / "findings.csv").open(newline="", encoding="utf-8") as handle:
        csv_rows = list(csv.DictReader(handle))
    return read_findings(folder / "out"), csv_rows


@pytest.mark.parametrize("cluster", list(FORMULAS))
def test_csv_neutralises_formula_in_owner_while_jsonl_keeps_the_raw_value(formula_scan, cluster):
    records, csv_rows = formula_scan
    payload = FORMULAS[cluster]
    raw = [r for r in records if r["ClusterName"] == cluster and r["Scope"] == "cluster"]
    assert raw and {r["Owner"] for r in raw} == {payload}
    cells = [r for r in csv_rows if r["ClusterName"] == cluster and r["Scope"] == "cluster"]
    assert len(cells) == len(raw)
    assert {r["Owner"] for r in cells} == {"'" + payload}  # OWASP: a leading apostrophe, the text otherwise kept


def test_no_csv_cell_but_evidence_starts_like_a_formula(formula_scan):
    _, csv_rows = formula_scan
    for row in csv_rows:
        for column, cell in row.items():
            if column != "Evidence":
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
        assert row["Evidence"].startswith("{")


# -- symbolic links ----------------------------------------------------------------------------------------------


def test_json_symlink_leaving_the_snapshot_folder_is_not_read(tmp_path):
    snapshot = demo_copy(tmp_path / "snapshot")
    outside = tmp_path / "outside"
    outside.mkdir()
    row = json.loads(json.dumps(named(resources(snapshot), PAYMENTS)).replace(PAYMENTS, "aks-secret-outside"))
    (outside / "secret.json").write_text(json.dumps([row]), encoding="utf-8")
    (snapshot / "linked.json").symlink_to(outside / "secret.json")
    result = cli("scan", "--snapshot", str(snapshot), "--pairs", str(snapshot / "pairs.yaml"),
                 "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    [note] = [line for line in result.stderr.splitlines() if "linked.json" in line]
    assert "symbolic link" in note and "outside the snapshot folder" in note and "not read" in note
    text = (tmp_path / "out" / "findings.jsonl").read_text(encoding="utf-8")
    assert "aks-secret-outside" not in text
    assert PAYMENTS in text  # the folder's own rows were read


# -- run ids and settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["../x", "a/b", "..", "../../etc/passwd", "a\\b", "", " "])
def test_path_like_run_id_is_exit_2_in_one_line(out_dir, run_id):
    result = scan_into(out_dir, "--demo", f"--run-id={run_id}")
    assert_one_line_error(result, 2, "--run-id")
    assert not (out_dir.parent / "x").exists()


@pytest.mark.parametrize(("variable", "value"), [("AUDIT_EVIDENCE_CONTAINER", "../../x"),
                                                 ("AUDIT_SPOOL_CONTAINER", "../spool"),
                                                 ("AUDIT_EVIDENCE_CONTAINER", "evidence/../../x")])
def test_path_like_container_setting_is_exit_2_in_one_line(out_dir, variable, value):
    result = scan_into(out_dir, "--demo", "--evidence", env={variable: value, "AUDIT_LOCAL_DIR": str(out_dir.parent)})
    assert_one_line_error(result, 2, variable)
    assert not (out_dir.parent.parent / "x").exists()


# -- ids with a trailing slash ----------------------------------------------------------------------------------


def test_ids_with_a_trailing_slash_are_the_same_resources(tmp_path):
    plain = demo_copy(tmp_path / "plain")
    slashed = demo_copy(tmp_path / "slashed")
    rows = resources(slashed)
    changed = 0
    for row in rows:
        if row["type"] in (T_CLUSTER, T_REGISTRY):
            row["id"] += "/"
            changed += 1
    assert changed >= 10
    write_resources(slashed, rows)
    run_scan(plain, tmp_path / "out-plain", pairs_file=plain / "pairs.yaml", run_id="plain")
    run_scan(slashed, tmp_path / "out-slashed", pairs_file=slashed / "pairs.yaml", run_id="slashed")
    want = {r["FindingId"]: r for r in read_findings(tmp_path / "out-plain")}
    got = {r["FindingId"]: r for r in read_findings(tmp_path / "out-slashed")}
    assert set(got) == set(want)
    assert {k: r["Status"] for k, r in got.items()} == {k: r["Status"] for k, r in want.items()}
    for record in got.values():
        for column in ("ClusterId", "RegistryId", "ResourceId"):
            assert not record[column].endswith("/"), (column, record[column])
        assert (record["ClusterId"], record["RegistryId"]) == (want[record["FindingId"]]["ClusterId"],
                                                               want[record["FindingId"]]["RegistryId"])


# -- role-assignment rows that disagree, repeat, or cannot be read -----------------------------------------------


def _assignment_lines(snapshot: Path) -> tuple[Path, list[str], int]:
    path = snapshot / "authorizationresources.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    [index] = [i for i, line in enumerate(lines) if PAYMENTS_ACRPULL in json.loads(line)["id"]]
    return path, lines, index


def _pull_verdict(out: Path) -> dict:
    [finding] = verdicts(read_findings(out), "AKS-ACR-001", PAYMENTS, SHARED)
    return finding


def test_the_demo_grant_passes_and_without_it_the_pair_fails(tmp_path):
    """The baseline the next tests depend on: this one row decides the pair."""
    snapshot = demo_copy(tmp_path / "snapshot")
    run_scan(snapshot, tmp_path / "with", pairs_file=snapshot / "pairs.yaml")
    assert _pull_verdict(tmp_path / "with")["Status"] == "Pass"
    path, lines, index = _assignment_lines(snapshot)
    del lines[index]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_scan(snapshot, tmp_path / "without", pairs_file=snapshot / "pairs.yaml")
    assert _pull_verdict(tmp_path / "without")["Status"] == "Fail"


@pytest.mark.parametrize("role", [READER_GUID, UNRELATED_GUID], ids=["reader", "unrelated-role"])
@pytest.mark.parametrize("order", ["copy-after", "copy-before"])
def test_rows_of_one_role_assignment_that_disagree_make_the_pair_unknown(tmp_path, role, order):
    snapshot = demo_copy(tmp_path / "snapshot")
    path, lines, index = _assignment_lines(snapshot)
    row = json.loads(lines[index])
    original = row["properties"]["roleDefinitionId"]
    row["properties"]["roleDefinitionId"] = original[: -len(role)] + role
    assert row["properties"]["roleDefinitionId"] != original
    lines.insert(index + 1 if order == "copy-after" else index, json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    outcome = run_scan(snapshot, tmp_path / "out", pairs_file=snapshot / "pairs.yaml")
    finding = _pull_verdict(tmp_path / "out")
    assert finding["Status"] == "Unknown"
    assert "disagree" in finding["Message"] and PAYMENTS_ACRPULL in finding["Message"]
    assert outcome.record.RunStatus in ("Succeeded", "Incomplete")


def test_an_identical_duplicate_role_assignment_row_changes_nothing(tmp_path):
    plain = demo_copy(tmp_path / "plain")
    doubled = demo_copy(tmp_path / "doubled")
    path, lines, index = _assignment_lines(doubled)
    lines.append(lines[index])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_scan(plain, tmp_path / "out-plain", pairs_file=plain / "pairs.yaml")
    run_scan(doubled, tmp_path / "out-doubled", pairs_file=doubled / "pairs.yaml")

    def essence(out: Path) -> list[tuple]:
        return sorted((r["FindingId"], r["Status"], r["Message"]) for r in read_findings(out))

    assert essence(tmp_path / "out-doubled") == essence(tmp_path / "out-plain")
    assert _pull_verdict(tmp_path / "out-doubled")["Status"] == "Pass"


@pytest.mark.parametrize("properties", [None, "AcrPull", {}, [], 7], ids=["null", "string", "empty", "list", "int"])
def test_an_unreadable_only_grant_makes_the_pair_unknown_and_is_counted(tmp_path, properties):
    snapshot = demo_copy(tmp_path / "snapshot")
    path, lines, index = _assignment_lines(snapshot)
    row = json.loads(lines[index])
    row["properties"] = properties
    lines[index] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("scan", "--snapshot", str(snapshot), "--pairs", str(snapshot / "pairs.yaml"), "--out",
                 str(tmp_path / "out"), "--quiet")
    assert result.returncode == 3, result.stderr  # an unreadable row is a gap: the run is incomplete
    assert "Traceback" not in result.stderr
    finding = _pull_verdict(tmp_path / "out")
    assert finding["Status"] == "Unknown"
    assert "could not be read" in finding["Message"]
    record = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    assert record["UnreadableRows"] == 1
    assert record["RunStatus"] == "Incomplete"


# -- a tag that names thousands of registries ---------------------------------------------------------------------


def test_a_tag_naming_5000_registries_is_capped_and_said(tmp_path):
    snapshot = demo_copy(tmp_path / "snapshot")
    rows = resources(snapshot)
    names = [f"acrfake{i:05d}" for i in range(5000)]
    named(rows, PAYMENTS)["tags"][PAIR_TAG] = " ".join(names)
    write_resources(snapshot, rows)
    started = time.monotonic()
    result = cli("scan", "--snapshot", str(snapshot), "--pairs", str(snapshot / "pairs.yaml"), "--out",
                 str(tmp_path / "out"), "--quiet", timeout=60)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert seconds < 30
    pairs = [r for r in read_findings(tmp_path / "out") if r["ClusterName"] == PAYMENTS and r["Scope"] == "pair"]
    declared = {r["RegistryName"] for r in pairs if "tag" in r["PairSource"].split(",")}
    audited = {name for name in declared if name.startswith("acrfake")}
    assert len(audited) <= MAX_DECLARED_REGISTRIES == 100
    assert audited == set(names[:MAX_DECLARED_REGISTRIES])
    said = [r for r in pairs if "5,000 registries" in r["Message"]]
    assert said and {r["Status"] for r in said} == {"Unknown"}
    assert {r["RuleId"] for r in said} >= {"AKS-ACR-000", "AKS-ACR-001"}
    assert len(pairs) < 20 * (MAX_DECLARED_REGISTRIES + 5)


# -- the Resource Graph collector counts every request, dropped connections too ------------------------------------


@pytest.fixture
def arg_emulator(tmp_path):
    started = []

    def start(**kwargs) -> ResourceGraphEmulator:
        kwargs.setdefault("quota", (1000, 5.0))
        emu = ResourceGraphEmulator(demo_path(), ca_out=tmp_path / "ca.pem", **kwargs).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.mark.parametrize(("resets", "concurrency", "page_size", "max_attempts"),
                         [(1, 1, 1000, 5), (2, 1, 3, 5), (3, 4, 2, 5), (2, 1, 1000, 2)],
                         ids=["one-reset", "two-resets-paged", "three-resets-concurrent", "resets-exhaust-attempts"])
def test_collector_request_count_includes_dropped_connections(arg_emulator, resets, concurrency, page_size,
                                                               max_attempts):
    emu = arg_emulator(page_size=page_size, faults=Faults(reset_first=resets))
    collector = ResourceGraphCollector(StaticTokenCredential("arm-token"), endpoint=emu.endpoint,
                                       connection_verify=str(emu.ca_path), backoff=0.01, concurrency=concurrency,
                                       page_size=page_size, max_attempts=max_attempts)
    coverage = collector.collect(lambda query, rows: None)
    assert emu.stats.resets == resets
    assert coverage.total("requests") == emu.stats.requests
    assert coverage.as_dict()["requests"] == emu.stats.requests
    if resets < max_attempts:
        assert coverage.gaps == []
        assert coverage.total("retries") >= resets
    else:  # the first query never got through: a gap, and the requests it made are still counted
        assert coverage.gaps
        assert emu.stats.requests == max_attempts


# -- absurd numbers from a source ---------------------------------------------------------------------------------


def test_an_absurd_pull_event_count_does_not_fail_the_scan(tmp_path, out_dir):
    snapshot = demo_copy(tmp_path / "snapshot")
    path = snapshot / "container_insights.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert isinstance(first["Count"], int)
    lines[0] = lines[0].replace(f'"Count":{first["Count"]}', '"Count":1e30', 1)
    assert '"Count":1e30' in lines[0]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("scan", "--snapshot", str(snapshot), "--pairs", str(snapshot / "pairs.yaml"), "--out", str(out_dir))
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 3), result.stderr[-2000:]
