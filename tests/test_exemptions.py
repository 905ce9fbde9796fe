"""Exemptions: validation (every problem at once), expiry with a grace, matching semantics, counts, speed."""

import hashlib
import json
import random
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from auditors.exemptions import EXPIRY_RULE, ExemptionsError, ExemptionSet, load_exemptions
from auditors.findings import read_records
from auditors.model import Cluster, Registry

TODAY = date(2026, 6, 1)
RULE_IDS = {f"AKS-ACR-{n:03d}" for n in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)}
RULE_SCOPES = {"AKS-ACR-001": "pair", "AKS-ACR-003": "pair", "AKS-ACR-005": "cluster", "AKS-ACR-006": "cluster",
               "AKS-ACR-007": "registry", "AKS-ACR-009": "registry"}
SUB_A, SUB_B = "33330000-0000-0000-0000-000000000001", "44440000-0000-0000-0000-000000000002"


def cluster(name: str, sub: str = SUB_A, tags: dict | None = None) -> Cluster:
    rid = f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/{name}"
    return Cluster(id=rid, name=name, resource_group="rg", subscription_id=sub, location="eastus", tags=tags or {})


def registry(name: str, sub: str = SUB_A, tags: dict | None = None) -> Registry:
    rid = f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/{name}"
    return Registry(id=rid, name=name, resource_group="rg", subscription_id=sub, location="eastus", tags=tags or {})


def entry(**changes) -> dict:
    base = {
        "id": "EX-0042",
        "rules": ["AKS-ACR-001", "AKS-ACR-003"],
        "clusters": {"name": "aks-legacy-*", "subscription": "3333*"},
        "registries": {"name": "fabrikamlegacy"},
        "justification": "SP cluster until migration",
        "approvedBy": "secops@example.com",
        "expiresOn": (TODAY + timedelta(days=90)).isoformat(),
        "ticket": "CHG-1234",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()


class NoAliasDumper(yaml.SafeDumper):
    """The loader refuses anchors, so shared test values must be written out in full."""

    def ignore_aliases(self, data):
        return True


def write(tmp_path, entries, name="exemptions.yaml", **top) -> str:
    path = tmp_path / name
    document = {"exemptions": entries, **top}
    path.write_text(json.dumps(document) if name.endswith(".json")
                    else yaml.dump(document, Dumper=NoAliasDumper, sort_keys=False))
    return str(path)


def load(tmp_path, entries, **options):
    options = {"rule_ids": RULE_IDS, "today": TODAY, **options}
    return load_exemptions(write(tmp_path, entries), **options)


def problems_of(tmp_path, entries, **options) -> list[str]:
    with pytest.raises(ExemptionsError) as caught:
        load(tmp_path, entries, **options)
    return caught.value.problems


# -- loading and validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["exemptions.yaml", "exemptions.json"])
def test_valid_file_loads_with_every_field_and_the_file_hash(tmp_path, name):
    path = write(tmp_path, [entry()], name=name)
    loaded = load_exemptions(path, rule_ids=RULE_IDS, today=TODAY)
    (exemption,) = loaded
    assert (exemption.id, exemption.rules, exemption.rule_ids) == (
        "EX-0042", ("AKS-ACR-001", "AKS-ACR-003"), frozenset({"AKS-ACR-001", "AKS-ACR-003"}))
    assert (exemption.clusters.names, exemption.clusters.subscriptions, exemption.registries.names) == (
        ["aks-legacy-*"], ["3333*"], ["fabrikamlegacy"])
    assert (exemption.justification, exemption.approved_by, exemption.ticket) == (
        "SP cluster until migration", "secops@example.com", "CHG-1234")
    assert exemption.expires_on == TODAY + timedelta(days=90)
    assert loaded.sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()


INVALID_ENTRIES = [  # (changes to a valid entry, field named, words)
    ({"justification": DROP}, "justification", "required"),
    ({"justification": "  "}, "justification", "required"),
    ({"approvedBy": DROP}, "approvedBy", "required"),
    ({"approvedBy": ""}, "approvedBy", "required"),
    ({"expiresOn": DROP}, "expiresOn", "required: a date YYYY-MM-DD"),
    ({"expiresOn": "31/03/2027"}, "expiresOn", "is not a date"),
    ({"expiresOn": "2027-3-31"}, "expiresOn", "is not a date"),
    ({"expiresOn": "2027-W13-3"}, "expiresOn", "is not a date"),
    ({"expiresOn": "2026-06-31"}, "expiresOn", "is not a date"),
    ({"expiresOn": "2026-09-01T00:00:00Z"}, "expiresOn", "is not a date"),
    ({"expiresOn": 20270331}, "expiresOn", "is not a date"),
    ({"expiresOn": "2027-06-02"}, "expiresOn", "366 days ahead; at most 365"),
    ({"expiresOn": "2026-04-01"}, "expiresOn", "expired 61 days ago (more than 30)"),
    ({"rules": DROP}, "rules", "required"),
    ({"rules": []}, "rules", "required"),
    ({"rules": ["AKS-ACR-001", 7]}, "rules", "required"),
    ({"rules": ["AKS-ACR-099"]}, "rules", "AKS-ACR-099 is not a known rule id"),
    ({"rules": ["AKS-ACR-9*"]}, "rules", "AKS-ACR-9* matches no known rule id"),
    ({"rules": [EXPIRY_RULE]}, "rules", "cannot itself be exempted"),
    ({"id": DROP}, "id", "required"),
    ({"id": 42}, "id", "required"),
    ({"ticket": ["a"]}, "ticket", "must be a string"),
    ({"clusters": DROP, "registries": DROP}, "clusters/registries", "at least one is required"),
    ({"clusters": {}}, "clusters", "must be a mapping"),
    ({"clusters": "aks-*"}, "clusters", "must be a mapping"),
    ({"clusters": {"name": "a", "resourceGroup": "rg"}}, "clusters", "unknown key(s) resourceGroup"),
    ({"registries": {"name": ["a", 3]}}, "registries", "`name` must be a string or a list of strings"),
    ({"owner": "me"}, "", "unknown key(s) owner"),
]


@pytest.mark.parametrize(("changes", "field", "words"), INVALID_ENTRIES)
def test_each_invalid_field_is_named_with_file_and_entry(tmp_path, changes, field, words):
    (problem,) = problems_of(tmp_path, [entry(), entry(**{"id": "EX-0043", **changes})])
    entry_name = "exemptions[1] (EX-0043)" if "id" not in changes else "exemptions[1]"
    assert problem.startswith(f"{tmp_path / 'exemptions.yaml'}: {entry_name}: " + (f"{field}: " if field else ""))
    assert words in problem
    assert "\n" not in problem


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, [
        entry(justification=DROP, expiresOn="2020-01-01"),
        entry(id="EX-0043", rules=["AKS-ACR-077"]),
        entry(id="ex-0042"),
        "not a mapping",
    ], extra=1)
    with pytest.raises(ExemptionsError) as caught:
        load_exemptions(path, rule_ids=RULE_IDS, today=TODAY)
    problems = caught.value.problems
    assert all(p.startswith(f"{path}: ") for p in problems)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "unknown top-level key(s) extra",
        "exemptions[0] (EX-0042): justification: required: a non-empty string",
        "exemptions[0] (EX-0042): expiresOn: 2020-01-01 expired 2343 days ago (more than 30); renew or remove it",
        "exemptions[1] (EX-0043): rules: AKS-ACR-077 is not a known rule id",
        "exemptions[2] (ex-0042): id: duplicate of exemptions[0]",
        "exemptions[3]: must be a mapping with id, rules, clusters or registries, justification, approvedBy, "
        "expiresOn",
    ]
    with pytest.raises(ExemptionsError) as caught:
        load(tmp_path, [entry(justification=DROP), entry(id="EX-0043", approvedBy=DROP)])
    assert str(caught.value).splitlines() == caught.value.problems


@pytest.mark.parametrize(("document", "words"), [
    ("", "expected a mapping with `exemptions`"),
    ("- id: EX-1\n", "expected a mapping with `exemptions`"),
    ("exemptions: {id: EX-1}\n", "`exemptions` must be a list"),
    ("exemptions:\n  - &e {id: EX-1}\n", "line 2: anchors (&e) are not allowed"),
])
def test_unusable_documents_are_one_problem(tmp_path, document, words):
    path = tmp_path / "exemptions.yaml"
    path.write_text(document)
    with pytest.raises(ExemptionsError) as caught:
        load_exemptions(path, rule_ids=RULE_IDS, today=TODAY)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: ") and words in problem


def test_an_empty_list_is_an_empty_set(tmp_path):
    assert len(load(tmp_path, [])) == 0
    assert len(load(tmp_path, None)) == 0


# -- expiry -------------------------------------------------------------------------------------------------

EXPIRY = [  # (days from today, grace days, outcome: error words or the entry's status)
    (0, 30, "expiring"),  # in force through its date
    (14, 30, "expiring"),
    (15, 30, "active"),
    (365, 30, "active"),
    (366, 30, "366 days ahead"),
    (-1, 30, "expired"),
    (-30, 30, "expired"),
    (-31, 30, "expired 31 days ago (more than 30)"),
    (-1, 0, "is in the past"),
    (0, 0, "expiring"),
]


@pytest.mark.parametrize(("days", "grace", "outcome"), EXPIRY)
def test_expiry_window(tmp_path, days, grace, outcome):
    changes = {"expiresOn": (TODAY + timedelta(days=days)).isoformat()}
    if outcome in ("active", "expiring", "expired"):
        loaded = load(tmp_path, [entry(**changes)], expired_grace_days=grace)
        assert loaded.as_records()[0]["status"] == outcome
    else:
        (problem,) = problems_of(tmp_path, [entry(**changes)], expired_grace_days=grace)
        assert f"expiresOn: {TODAY + timedelta(days=days)} " in problem and outcome in problem


def test_an_expired_entry_exempts_nothing_and_is_listed_for_aks_acr_013(tmp_path):
    loaded = load(tmp_path, [entry(id="EX-OLD", expiresOn=(TODAY - timedelta(days=3)).isoformat()),
                             entry(id="EX-NEW", registries=DROP, rules=["AKS-ACR-006"])])
    pair = ("AKS-ACR-001", cluster("aks-legacy-1"), registry("fabrikamlegacy"))
    assert loaded.match(*pair) is None
    assert [e.id for e in loaded.expired()] == ["EX-OLD"]
    assert [e.id for e in loaded.active()] == ["EX-NEW"]
    assert loaded.matched(loaded.expired()[0]) == 1  # it would have covered the finding: named in 013
    assert [e.id for e in loaded.stale()] == ["EX-NEW"]  # expired entries are not also reported stale


def test_expiring_within_is_inclusive_and_soonest_first(tmp_path):
    loaded = load(tmp_path, [entry(id=f"EX-{days}", expiresOn=(TODAY + timedelta(days=days)).isoformat())
                             for days in (20, 14, -2, 0, 7)])
    assert [e.id for e in loaded.expiring_within(TODAY)] == ["EX-0", "EX-7", "EX-14"]
    assert [e.id for e in loaded.expiring_within(TODAY, days=30)] == ["EX-0", "EX-7", "EX-14", "EX-20"]
    assert [e.id for e in loaded.expired(TODAY + timedelta(days=8))] == ["EX--2", "EX-0", "EX-7"]


# -- matching -----------------------------------------------------------------------------------------------

LEGACY, OTHER, LEGACY_ELSEWHERE = cluster("aks-legacy-1"), cluster("aks-prod-1"), cluster("aks-legacy-2", SUB_B)
FABRIKAM, CONTOSO = registry("fabrikamlegacy"), registry("contoso")

MATCHING = [  # (selectors of the exemption, rule, cluster, registry, matches)
    ({"registries": DROP, "rules": ["AKS-ACR-006"]}, "AKS-ACR-006", LEGACY, None, True),
    ({"registries": DROP, "rules": ["AKS-ACR-006"]}, "AKS-ACR-006", OTHER, None, False),
    ({"registries": DROP, "rules": ["AKS-ACR-006"]}, "AKS-ACR-006", LEGACY_ELSEWHERE, None, False),
    ({"registries": DROP, "rules": ["AKS-ACR-006"]}, "AKS-ACR-005", LEGACY, None, False),
    ({"registries": DROP, "rules": ["AKS-ACR-001"]}, "AKS-ACR-001", LEGACY, FABRIKAM, True),  # pairs of the cluster
    ({"registries": DROP, "rules": ["AKS-ACR-001"]}, "AKS-ACR-001", OTHER, FABRIKAM, False),
    ({}, "AKS-ACR-001", LEGACY, FABRIKAM, True),
    ({}, "AKS-ACR-003", LEGACY, FABRIKAM, True),
    ({}, "AKS-ACR-001", LEGACY, CONTOSO, False),
    ({}, "AKS-ACR-001", OTHER, FABRIKAM, False),
    ({}, "AKS-ACR-001", LEGACY, None, True),  # registry not in the inventory: the cluster decides
    ({"rules": ["AKS-ACR-00*"]}, "AKS-ACR-008", LEGACY, FABRIKAM, True),
    ({"rules": ["aks-acr-00?"]}, "AKS-ACR-001", LEGACY, FABRIKAM, True),
    ({"rules": ["AKS-ACR-0*"]}, EXPIRY_RULE, LEGACY, FABRIKAM, False),
    ({"clusters": DROP, "rules": ["AKS-ACR-007"]}, "AKS-ACR-007", None, FABRIKAM, True),
    ({"clusters": DROP, "rules": ["AKS-ACR-001"]}, "AKS-ACR-001", OTHER, FABRIKAM, True),  # pairs of a registry
    ({"rules": ["AKS-ACR-006"]}, "AKS-ACR-006", LEGACY, None, True),  # both selectors, a cluster rule
    ({"rules": ["AKS-ACR-006"]}, "AKS-ACR-006", OTHER, None, False),
    ({"registries": DROP, "rules": ["AKS-ACR-007"]}, "AKS-ACR-007", None, FABRIKAM, False),
    ({"clusters": DROP, "rules": ["AKS-ACR-007"]}, "AKS-ACR-007", None, CONTOSO, False),
    ({"clusters": {"tag": "env=legacy"}}, "AKS-ACR-001", cluster("a", tags={"Env": "Legacy"}), FABRIKAM, True),
    ({"clusters": {"tag": "env"}}, "AKS-ACR-001", cluster("a", tags={"env": "x"}), FABRIKAM, True),
    ({"clusters": {"tag": "env=legacy"}}, "AKS-ACR-001", cluster("a", tags={"env": "prod"}), FABRIKAM, False),
    ({"clusters": {"id": LEGACY.id.upper()}}, "AKS-ACR-001", LEGACY, FABRIKAM, True),
    ({"registries": {"subscription": "4444*"}}, "AKS-ACR-001", LEGACY, registry("x", SUB_B), True),
    ({"registries": {"name": ["contoso", "fab*"]}}, "AKS-ACR-001", LEGACY, FABRIKAM, True),
    (None, "AKS-ACR-001", LEGACY, FABRIKAM, False),  # no entry: nothing matches
]


@pytest.mark.parametrize(("changes", "rule_id", "cluster_", "registry_", "matches"), MATCHING)
def test_matching_semantics(tmp_path, changes, rule_id, cluster_, registry_, matches):
    loaded = load(tmp_path, [] if changes is None else [entry(**changes)])
    found = loaded.match(rule_id, cluster_, registry_)
    assert (found is not None) == matches
    if changes is not None:
        assert loaded.exemptions[0].selects(rule_id, cluster_, registry_) == matches


def test_first_entry_in_force_wins_and_every_selecting_entry_counts(tmp_path):
    loaded = load(tmp_path, [entry(id="EX-1", expiresOn=(TODAY - timedelta(days=1)).isoformat()),
                             entry(id="EX-2"), entry(id="EX-3", registries={"name": "*"}),
                             entry(id="EX-4", rules=["AKS-ACR-008"])])
    for _ in range(3):
        assert loaded.match("AKS-ACR-001", LEGACY, FABRIKAM).id == "EX-2"
    assert loaded.match("AKS-ACR-001", LEGACY, CONTOSO).id == "EX-3"
    assert [(r["id"], r["matched"]) for r in loaded.as_records()] == [("EX-1", 3), ("EX-2", 3), ("EX-3", 4),
                                                                       ("EX-4", 0)]
    assert [e.id for e in loaded.stale()] == ["EX-4"]


def test_records_for_the_evidence_archive(tmp_path):
    loaded = load(tmp_path, [entry(clusters={"name": "AKS-legacy-*", "tag": ["env=legacy", "team"]})])
    loaded.match("AKS-ACR-001", cluster("aks-legacy-9", tags={"env": "legacy", "team": "a"}), FABRIKAM)
    assert loaded.as_records() == [{
        "id": "EX-0042", "rules": ["AKS-ACR-001", "AKS-ACR-003"],
        "clusters": {"name": ["aks-legacy-*"], "tag": ["env=legacy", "team=*"]},
        "registries": {"name": ["fabrikamlegacy"]},
        "justification": "SP cluster until migration", "approvedBy": "secops@example.com",
        "expiresOn": "2026-08-30", "ticket": "CHG-1234", "status": "active", "matched": 1,
    }]


# -- rule scopes --------------------------------------------------------------------------------------------

SCOPES = [  # (changes, problem words or None)
    ({"rules": ["AKS-ACR-006"]}, None),  # both selectors: the cluster selector covers cluster rules
    ({"rules": ["AKS-ACR-001"], "registries": DROP}, None),  # the pairs of those clusters
    ({"rules": ["AKS-ACR-007"], "registries": DROP}, "AKS-ACR-007 reports registry findings, which an exemption "
                                                     "selecting clusters only never matches"),
    ({"rules": ["AKS-ACR-006"], "clusters": DROP}, "reports cluster findings"),
    ({"rules": ["AKS-ACR-00*"], "registries": DROP}, None),  # a glob keeps the rules that fit
    ({"rules": ["AKS-ACR-00[79]"], "registries": DROP}, "AKS-ACR-00[79] reports registry findings"),
]


@pytest.mark.parametrize(("changes", "words"), SCOPES)
def test_rule_scopes_reject_entries_that_could_never_match(tmp_path, changes, words):
    if words is None:
        assert len(load(tmp_path, [entry(**changes)], rule_scopes=RULE_SCOPES)) == 1
    else:
        (problem,) = problems_of(tmp_path, [entry(**changes)], rule_scopes=RULE_SCOPES)
        assert ": rules: " in problem and words in problem


def test_a_glob_covers_only_rules_whose_scope_fits(tmp_path):
    loaded = load(tmp_path, [entry(rules=["AKS-ACR-00*"], registries=DROP)], rule_scopes=RULE_SCOPES)
    assert {"AKS-ACR-001", "AKS-ACR-003", "AKS-ACR-005", "AKS-ACR-006"} <= loaded.exemptions[0].rule_ids
    assert not {"AKS-ACR-007", "AKS-ACR-009"} & loaded.exemptions[0].rule_ids


# -- speed and the cache ------------------------------------------------------------------------------------


def estate(seed: int):
    rng = random.Random(seed)
    clusters = [cluster(f"aks-{rng.choice(['legacy', 'prod', 'dev'])}-{i}", rng.choice([SUB_A, SUB_B]),
                        {"env": rng.choice(["prod", "dev", "legacy"])}) for i in range(2000)]
    registries = [registry(f"acr{rng.choice(['shared', 'legacy', 'edge'])}{i}", rng.choice([SUB_A, SUB_B]))
                  for i in range(300)]
    selectors = [{"name": "aks-legacy-*"}, {"tag": "env=dev"}, {"subscription": "4444*"},
                 {"name": ["aks-prod-1*", "aks-dev-2*"]}, *({"name": f"aks-*-{k}?"} for k in range(40))]
    entries = []
    for i in range(200):
        shape = rng.choice(["cluster", "registry", "pair"])
        entries.append(entry(
            id=f"EX-{i}", rules=[rng.choice(["AKS-ACR-00*", "AKS-ACR-001", "AKS-ACR-006", "AKS-ACR-007"])],
            clusters=rng.choice(selectors) if shape != "registry" else DROP,
            registries={"name": rng.choice(["acrlegacy*", "acrshared1*", "*"])} if shape != "cluster" else DROP,
            expiresOn=(TODAY + timedelta(days=rng.randint(-20, 200))).isoformat()))
    rules = ["AKS-ACR-001", "AKS-ACR-003", "AKS-ACR-006", "AKS-ACR-007", "AKS-ACR-008"]
    findings = [(rng.choice(rules), rng.choice(clusters), rng.choice(registries)) for _ in range(100_000)]
    findings = [(r, None if r == "AKS-ACR-007" else c, None if r == "AKS-ACR-006" else reg) for r, c, reg in findings]
    return entries, findings


def test_matching_100k_findings_is_fast_and_agrees_with_the_reference_semantics(tmp_path):
    entries, findings = estate(seed=7)
    loaded = load(tmp_path, entries)
    started = time.perf_counter()
    results = [loaded.match(*finding) for finding in findings]
    assert time.perf_counter() - started < 3.0
    assert sum(r is not None for r in results) > 1000  # the estate exercises matches, not only misses
    sample = findings[:5000]
    fresh = ExemptionSet(loaded.exemptions, today=TODAY)
    counts = dict.fromkeys((e.id for e in loaded.exemptions), 0)
    for finding, result in zip(sample, results, strict=False):
        selecting = [e for e in loaded.exemptions if e.selects(*finding)]
        assert result is next((e for e in selecting if not e.is_expired(TODAY)), None)
        assert fresh.match(*finding) is result
        for e in selecting:
            counts[e.id] += 1
    assert {r["id"]: r["matched"] for r in fresh.as_records()} == counts


def _cli(*args, env=None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "auditors", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_fail_on_counts_only_findings_that_are_not_exempted(tmp_path):
    waiver = tmp_path / "all.yaml"
    waiver.write_text(yaml.safe_dump({"exemptions": [{
        "id": "EX-ALL", "rules": ["AKS-ACR-00*", "AKS-ACR-011", "AKS-ACR-012", "AKS-ACR-014"],
        "clusters": {"name": "*"}, "registries": {"name": "*"}, "justification": "freeze",
        "approvedBy": "secops@example.com", "expiresOn": "2027-01-31"}]}))
    gated = _cli("scan", "--demo", "--out", str(tmp_path / "a"), "--quiet", "--fail-on", "Low")
    assert gated.returncode == 1 and "--fail-on Low: " in gated.stderr
    waived = _cli("scan", "--demo", "--out", str(tmp_path / "b"), "--quiet", "--fail-on", "Low", "--exemptions",
                  str(waiver))
    assert waived.returncode == 0, waived.stderr
    records = list(read_records(tmp_path / "b/findings.jsonl"))
    fails = [r for r in records if r["Status"] == "Fail"]
    assert fails and all(r["Exempted"] and r["ExemptionId"] == "EX-ALL" for r in fails)  # still Fail, but waived
    run = json.loads((tmp_path / "b/run.json").read_text())
    assert run["ExemptedCount"] == sum(r["Exempted"] for r in records) and run["FailCount"] == 0


def test_evidence_verify_catches_a_changed_exemptions_file_in_the_archive(tmp_path):
    env = {"AUDIT_LOCAL_DIR": str(tmp_path / "local"), "AUDIT_SIGNING_KEY_ID": ""}
    scan = _cli("scan", "--demo", "--out", str(tmp_path / "out"), "--quiet", "--evidence", "--exemptions",
                "auditors/demo/exemptions.yaml", env=env)
    assert scan.returncode == 0, scan.stderr
    [archived] = list((tmp_path / "local" / "evidence").rglob("exemptions.json"))
    document = json.loads(archived.read_text())
    demo = Path("auditors/demo/exemptions.yaml").read_bytes()
    assert document["sha256"] == hashlib.sha256(demo).hexdigest()
    assert {e["id"] for e in document["exemptions"]} == {"EX-0042", "EX-0017"}
    run = json.loads((tmp_path / "out/run.json").read_text())
    assert run["ExemptionsSha256"] == document["sha256"]
    assert _cli("evidence", "verify", env=env).returncode == 0
    document["exemptions"][0]["expiresOn"] = "2099-12-31"  # a storage writer extends a waiver afterwards
    archived.chmod(0o644)
    archived.write_text(json.dumps(document))
    tampered = _cli("evidence", "verify", env=env)
    assert tampered.returncode == 1 and "exemptions.json" in tampered.stdout + tampered.stderr
