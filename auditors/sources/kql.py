"""The collector's Resource Graph queries: one `.kql` file each, shipped in the package.

Each query projects `id` (paging needs it) and orders by `id` (stable pages). Their table, the resource
types they select and the columns they project are read from the text itself, so the emulator serves
exactly what the files ask for and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

AUTHORIZATION_TABLE = "authorizationresources"
_COMMENT = re.compile(r"//[^\n]*")
_TYPES = re.compile(r"\btype\s*(?:=~|in~)\s*(\([^)]*\)|'[^']*')", re.I)
_QUOTED = re.compile(r"'([^']*)'")
_PROJECT = re.compile(r"\|\s*project\s+([^|]+)", re.I)
_EXCLUDED_PRINCIPALS = re.compile(r"tostring\(properties\.principalType\)\s*!in~\s*\(([^)]*)\)", re.I)


@dataclass(frozen=True)
class Query:
    name: str
    text: str
    table: str
    types: tuple[str, ...]
    columns: tuple[str, ...]
    excluded_principal_types: tuple[str, ...] = ()  # lower-case; from `principalType) !in~ (...)`

    @property
    def authorization(self) -> bool:
        return self.table == AUTHORIZATION_TABLE


def normalise(text: str) -> str:
    """Query text without comments and with whitespace collapsed, for recognising a query."""
    return " ".join(_COMMENT.sub("", text).split())


def parse(name: str, text: str) -> Query:
    body = normalise(text)
    table = body.split(" ", 1)[0].lower()
    match = _TYPES.search(body)
    types = tuple(t.lower() for t in _QUOTED.findall(match.group(1))) if match else ()
    project = _PROJECT.search(body)
    columns = tuple(c.strip() for c in project.group(1).split(",")) if project else ()
    if not types or "id" not in columns or not re.search(r"\|\s*order\s+by\s+id\b", body, re.I):
        raise ValueError(f"query {name}: must select types, project id and order by id")
    excluded = _EXCLUDED_PRINCIPALS.search(body)
    principals = tuple(t.lower() for t in _QUOTED.findall(excluded.group(1))) if excluded else ()
    return Query(name, text, table, types, columns, principals)


@cache
def collector_queries() -> dict[str, Query]:
    """Every query the collector runs, by name (the file stem), in collection order."""
    folder = resources.files("auditors.sources") / "queries"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".kql")), key=lambda f: f.name)
    queries = {f.name.removesuffix(".kql"): parse(f.name.removesuffix(".kql"), f.read_text(encoding="utf-8"))
               for f in files}
    # Subscriptions first: their ancestry decides how the other queries are scoped.
    return {"subscriptions": queries.pop("subscriptions"), **queries}
