"""The rule catalog is complete: typed metadata, a doc page per rule, docs in step with the metadata.

The code is the source of truth. Every rule's page is checked against its `RuleMeta`: front matter, title,
synopsis, remediation, links, the verdict table against `statuses`, the Controls subsection against `controls`,
and the demo findings the page quotes against a real `scan --demo`. The catalog table of docs/rules/README.md
is checked against the metadata of every rule.
"""

import argparse
import json
import re
from pathlib import Path

import pytest

from auditors.findings import read_records
from auditors.rules import RESERVED, RULES, Scope, Severity, Status, catalog, catalog_document

DOCS = Path(__file__).resolve().parent.parent / "docs" / "rules"
SECTIONS = ["## Synopsis", "## Description", "## Recommendation", "## Examples", "## Links"]
RULE_IDS = [rule.meta.id for rule in catalog()]
RULE_ID = re.compile(r"AKS-ACR-\d{3}")
STATUS_NAMES = {status.value for status in Status}
VERDICT_TABLE_HEADER = "| Status | When |"
CONTROLS_HEADING = "### Controls"
CONTROL_ID = re.compile(r"\b(?:MCSB|CIS-AKS|NIST-800-53|PSRule):[A-Za-z0-9.()-]*[A-Za-z0-9)]")
NEVER_RETURNS = re.compile(r"never returns?((?:\s*(?:,|or|and|nor)?\s*(?:Pass|Fail|Unknown|NotApplicable)\b)+)")
CATALOG_HEADER = "| Id | Title | Severity | Scope | Category | Seed cause | Page |"


def page(rule_id: str) -> str:
    return (DOCS / f"{rule_id}.md").read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The body of a `## ` section (up to the next `## ` heading)."""
    return text.split(f"{heading}\n", 1)[1].split("\n## ", 1)[0]


def front_matter(text: str) -> dict[str, str]:
    block = text.split("---\n", 2)[1]
    return dict(line.split(": ", 1) for line in block.strip().splitlines())


def table_rows(text: str, header: str) -> list[list[str]]:
    """Rows (cells stripped) of every markdown table under `header`, in order."""
    rows, inside = [], False
    for line in text.splitlines():
        if line.strip() == header:
            inside = True
            continue
        if inside and re.fullmatch(r"\|(\s*-+\s*\|)+", line.strip()):
            continue
        if inside and line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        inside = False
    return rows


def verdict_statuses(text: str) -> set[str]:
    return {row[0] for row in table_rows(section(text, "## Description"), VERDICT_TABLE_HEADER)}


def controls_subsection(text: str) -> str:
    """The `### Controls` subsection inside Links (up to the next heading or the end)."""
    links = text.split("## Links\n", 1)[1]
    assert f"{CONTROLS_HEADING}\n" in links, "no Controls subsection in Links"
    return re.split(r"\n#{2,3} ", links.split(f"{CONTROLS_HEADING}\n", 1)[1], maxsplit=1)[0]


def seed_cause_text(value: int | None) -> str:
    return str(value) if value is not None else "none"


def catalog_table() -> str:
    """docs/rules/README.md's catalog table as the metadata says it should read (paste it on a mismatch)."""
    lines = [CATALOG_HEADER, "|---|---|---|---|---|---|---|"]
    for rule in catalog():
        meta = rule.meta
        lines.append(f"| {meta.id} | {meta.title} | {meta.severity.value} | {meta.scope.value} | {meta.category} | "
                     f"{seed_cause_text(meta.seed_cause)} | [{meta.id}]({meta.id}.md) |")
    return "\n".join(lines)


# -- the catalog itself ------------------------------------------------------------------------------------------

def test_public_rule_ids():
    documented = [entry["id"] for entry in catalog_document()]
    assert len(documented) == len(set(documented)), "a rule id is registered twice"
    assert sorted(RULE_IDS) == RULE_IDS
    for rule_id in documented:
        assert RULE_ID.fullmatch(rule_id), rule_id
    assert not set(RESERVED) & set(RULES)
    pages = {path.stem for path in DOCS.glob("*.md") if path.name != "README.md"}
    assert pages - set(documented) == set(), "doc page(s) without a rule"
    assert set(documented) - pages == set(), "rule(s) without a doc page"


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_metadata_is_complete(rule_id):
    meta = RULES[rule_id].meta
    assert meta.id == rule_id and RULE_ID.fullmatch(meta.id)
    assert isinstance(meta.severity, Severity) and isinstance(meta.scope, Scope)
    assert meta.title and meta.synopsis.endswith(".") and meta.category
    assert meta.links and all(link.startswith("https://learn.microsoft.com/") for link in meta.links)
    assert meta.seed_cause in (None, 1, 2, 3, 4, 5, 6)
    assert meta.statuses and all(isinstance(status, Status) for status in meta.statuses)
    assert all(CONTROL_ID.fullmatch(control) for control in meta.controls), meta.controls


def cli_commands() -> set[str]:
    from auditors.cli import _parser

    return {name for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices}


# Disagreements between the code and its intended behaviour, found by these checks; the code is not changed here.
# Strict xfail: once the code is fixed, the unexpected pass fails the run until the entry is removed.
CODE_PROBLEMS: dict[str, str] = {}


@pytest.mark.parametrize("rule_id", [
    pytest.param(rule_id, marks=pytest.mark.xfail(strict=True, reason=CODE_PROBLEMS[rule_id]))
    if rule_id in CODE_PROBLEMS else rule_id for rule_id in RULE_IDS])
def test_remediation_runs_commands_that_exist(rule_id):
    remediation = RULES[rule_id].meta.remediation
    assert "az " in remediation
    for command in re.findall(r"python -m auditors (\S+)", remediation):
        assert command in cli_commands(), f"{rule_id}: `python -m auditors {command}` is not a command of the CLI"


@pytest.mark.parametrize("rule_id", [r.meta.id for r in catalog() if r.meta.scope != Scope.EXEMPTION])
def test_rules_the_engine_evaluates_declare_unknown(rule_id):
    """`evaluate` turns a rule error, conflicting rows or (for pair rules) a declared registry that is not in the
    inventory into Unknown for any rule it evaluates, so each such rule declares Unknown and its page's table,
    which equals the declared statuses, lists it."""
    assert Status.UNKNOWN in RULES[rule_id].meta.statuses


# -- each rule's page --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule_id", [*RULE_IDS, *RESERVED])
def test_doc_page_has_every_section_in_order(rule_id):
    text = page(rule_id)
    positions = [text.find(heading + "\n") for heading in SECTIONS]
    assert -1 not in positions, f"{rule_id}: missing one of {SECTIONS}"
    assert positions == sorted(positions)
    assert text.startswith(f"---\nid: {rule_id}\n")


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_doc_page_agrees_with_metadata(rule_id):
    meta, text = RULES[rule_id].meta, page(rule_id)
    assert f"# {rule_id}: {meta.title}\n" in text
    head = front_matter(text)
    assert head["id"] == meta.id and head["title"] == meta.title
    assert head["severity"] == meta.severity.value and head["scope"] == meta.scope.value
    assert head["category"] == meta.category and head["seed_cause"] == seed_cause_text(meta.seed_cause)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", head["reviewed"])
    assert section(text, "## Synopsis").strip() == meta.synopsis
    for link in meta.links:
        assert link in text
    for line in meta.remediation.splitlines():
        pattern = re.escape(line.strip())
        pattern = re.sub(r"\\\{[a-z_]+\\\}", r"<[A-Za-z0-9-]+>", pattern)
        assert re.search(pattern, text), f"{rule_id}: remediation line missing from the doc: {line}"


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_verdict_table_lists_exactly_the_declared_statuses(rule_id):
    meta, text = RULES[rule_id].meta, page(rule_id)
    found = verdict_statuses(text)
    assert found, f"{rule_id}: no `{VERDICT_TABLE_HEADER}` table in the Description"
    assert found <= STATUS_NAMES, f"{rule_id}: not a status: {found - STATUS_NAMES}"
    assert found == {status.value for status in meta.statuses}, f"{rule_id}: the page's verdicts differ from RuleMeta"


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_page_never_denies_a_declared_status(rule_id):
    meta, text = RULES[rule_id].meta, page(rule_id)
    declared = {status.value for status in meta.statuses}
    for match in NEVER_RETURNS.finditer(text):
        denied = set(re.findall(r"Pass|Fail|Unknown|NotApplicable", match.group(1)))
        assert not denied & declared, f"{rule_id}: says '{match.group(0)}', but the rule declares {sorted(declared)}"


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_controls_subsection_lists_exactly_the_rules_controls(rule_id):
    meta = RULES[rule_id].meta
    controls = controls_subsection(page(rule_id))
    listed = set(CONTROL_ID.findall(controls))
    assert listed == set(meta.controls), f"{rule_id}: Controls lists {sorted(listed)}, RuleMeta {list(meta.controls)}"
    if not meta.controls:
        assert len(controls.strip()) > 40, f"{rule_id}: a rule without controls says why"


def test_pull_verdict_page_lists_the_blocking_checks_in_order():
    from auditors.rules.pull_verdict import BLOCKING

    listed = section(page("AKS-ACR-000"), "## Description").split("**Blocking checks", 1)[1].split("\n\n", 1)[0]
    order = list(dict.fromkeys(re.findall(r"AKS-ACR-\d{3}", listed)))
    assert order == [rule_id for rule_id, _ in BLOCKING]


# -- the catalog page --------------------------------------------------------------------------------------------

def test_readme_catalog_table_matches_the_metadata():
    text = (DOCS / "README.md").read_text(encoding="utf-8")
    found = table_rows(text, CATALOG_HEADER)
    expected = table_rows(catalog_table(), CATALOG_HEADER)
    assert found == expected, "docs/rules/README.md's catalog table is stale; it should read:\n" + catalog_table()
    for rule_id in RESERVED:
        assert rule_id in text


def test_readme_names_every_scope_and_status():
    text = (DOCS / "README.md").read_text(encoding="utf-8")
    for scope in Scope:
        assert f"**{scope.value}:**" in text, f"README describes no `{scope.value}` scope"
    for status in STATUS_NAMES:
        assert f"| {status} |" in text


# -- the demo findings the pages quote ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_findings(tmp_path_factory) -> list[dict]:
    """What `python -m auditors scan --demo --exemptions auditors/demo/exemptions.yaml` writes."""
    from auditors.inputs import demo_path
    from auditors.pipeline import RunRequest, run_audit
    from auditors.settings import Settings

    out = tmp_path_factory.mktemp("demo-scan")
    settings = Settings(out_dir=str(out), exemptions_file=str(demo_path() / "exemptions.yaml"))
    outcome = run_audit(settings, RunRequest("demo"))
    assert outcome.error is None, outcome.error
    return list(read_records(out / "findings.jsonl"))


def quoted_findings(text: str) -> list[dict]:
    """Each one-line JSON object with a RuleId in the Examples section."""
    examples = section(text, "## Examples")
    return [json.loads(line) for line in (raw.strip() for raw in examples.splitlines())
            if line.startswith("{") and '"RuleId"' in line]


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_quoted_demo_findings_are_real(rule_id, demo_findings):
    quoted = quoted_findings(page(rule_id))
    assert any(q["RuleId"] == rule_id for q in quoted), f"{rule_id}: the Examples quote no demo finding of the rule"
    for q in quoted:
        assert any(all(f.get(key) == value for key, value in q.items()) for f in demo_findings), \
            f"{rule_id}: no demo finding matches {q}"
