"""The rule catalog is complete: typed metadata, a doc page per rule, docs in step with the metadata."""

import re
from pathlib import Path

import pytest

from auditors.rules import RESERVED, RULES, Scope, Severity, catalog

DOCS = Path(__file__).resolve().parent.parent / "docs" / "rules"
SECTIONS = ["## Synopsis", "## Description", "## Recommendation", "## Examples", "## Links"]
RULE_IDS = [rule.meta.id for rule in catalog()]


def page(rule_id: str) -> str:
    return (DOCS / f"{rule_id}.md").read_text(encoding="utf-8")


def test_public_rule_ids():
    assert RULE_IDS == ["AKS-ACR-001", "AKS-ACR-003", "AKS-ACR-004", "AKS-ACR-005", "AKS-ACR-006",
                        "AKS-ACR-007", "AKS-ACR-008", "AKS-ACR-009", "AKS-ACR-011"]
    assert set(RESERVED) == {"AKS-ACR-002"} and not set(RESERVED) & set(RULES)


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_metadata_is_complete(rule_id):
    meta = RULES[rule_id].meta
    assert re.fullmatch(r"AKS-ACR-\d{3}", meta.id)
    assert isinstance(meta.severity, Severity) and isinstance(meta.scope, Scope)
    assert meta.title and meta.synopsis.endswith(".") and meta.category
    assert "az " in meta.remediation
    assert meta.links and all(link.startswith("https://learn.microsoft.com/") for link in meta.links)
    assert meta.seed_cause in (None, 1, 2, 3, 4, 5, 6)


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
    assert f"severity: {meta.severity.value}\n" in text and f"scope: {meta.scope.value}\n" in text
    synopsis = text.split("## Synopsis\n", 1)[1].split("\n## ", 1)[0].strip()
    assert synopsis == meta.synopsis
    for link in meta.links:
        assert link in text
    for line in meta.remediation.splitlines():
        pattern = re.escape(line.strip())
        pattern = re.sub(r"\\\{[a-z_]+\\\}", r"<[A-Za-z0-9-]+>", pattern)
        assert re.search(pattern, text), f"{rule_id}: remediation line missing from the doc: {line}"

