"""Every collector query is valid KQL against the declared Resource Graph table schemas."""

import json
import os
from pathlib import Path

import pytest

from auditors.sources.kql import collector_queries
from tests.kql import kusto

TABLES = {k: v for k, v in json.loads((Path(__file__).parent / "kql" / "resource_graph_tables.json").read_text())
          .items() if not k.startswith("_")}
REASON = kusto.available()
pytestmark = pytest.mark.skipif(bool(REASON) and not os.environ.get("CI_REQUIRE_KQL"), reason=REASON or "")


@pytest.fixture(scope="module")
def analysed():
    if REASON:
        pytest.fail(f"KQL validation required but unavailable: {REASON}")
    return kusto.analyse(TABLES, {name: q.text for name, q in collector_queries().items()})


@pytest.mark.parametrize("name", list(collector_queries()))
def test_query_has_no_errors_and_projects_what_the_collector_expects(analysed, name):
    result = analysed[name]
    assert kusto.errors(result) == []
    assert [c.split(":")[0] for c in result["columns"]] == list(collector_queries()[name].columns)


def test_the_validator_catches_typos():
    if REASON:
        pytest.skip(REASON)
    broken = kusto.analyse(TABLES, {
        "column": "resources | where typo =~ 'x' | project id",
        "table": "resourcez | project id",
        "syntax": "resources | where type =~ 'x' | project id,",
    })
    assert all(kusto.errors(result) for result in broken.values())


def log_analytics_tables() -> dict[str, dict[str, str]]:
    from auditors.sinks.tables import tables_document

    return {t["table"]: {c["name"]: c["type"] for c in t["columns"]} for t in tables_document()["tables"]}


def test_readme_log_analytics_queries_are_valid():
    import re

    if REASON:
        pytest.skip(REASON)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    queries = {f"readme-{i}": q for i, q in enumerate(re.findall(r"```kusto\n(.+?)\n```", readme, flags=re.S))}
    assert len(queries) >= 2
    for name, result in kusto.analyse(log_analytics_tables(), queries).items():
        assert kusto.errors(result) == [], name


def test_readme_settings_table_is_current():
    from auditors.settings import settings_table

    assert settings_table() in (Path(__file__).resolve().parent.parent / "README.md").read_text()
