"""The rule catalog: one small pure function per rule, with typed metadata.

Rules register themselves with `@rule(RuleMeta(...))` in any module of this package; `catalog()` discovers
the modules, so adding a rule is its function, its doc page (docs/rules/<ID>.md) and its tests. Rule ids are
a public contract (docs, the Log Analytics table and alert rules key on them).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any


class Status(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    UNKNOWN = "Unknown"
    NOT_APPLICABLE = "NotApplicable"


class Severity(StrEnum):
    INFORMATIONAL = "Informational"
    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"
    CRITICAL = "Critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    @classmethod
    def parse(cls, text: str) -> Severity:
        for member in cls:
            if member.value.lower() == text.strip().lower():
                return member
        raise ValueError(f"unknown severity {text!r}; choose one of {', '.join(m.value for m in cls)}")


class Scope(StrEnum):
    CLUSTER = "cluster"
    REGISTRY = "registry"
    PAIR = "pair"
    EXEMPTION = "exemption"  # one finding per entry of the exemptions file


@dataclass(frozen=True)
class RuleMeta:
    id: str
    title: str
    severity: Severity
    scope: Scope
    category: str
    seed_cause: int | None
    synopsis: str
    remediation: str  # `az` commands; {placeholders} are filled from the finding's resources
    statuses: frozenset[Status]  # every verdict the rule's function can return (its doc page's table agrees)
    links: tuple[str, ...] = ()
    # Compliance controls the rule gives evidence for: `MCSB:<id>` (Microsoft cloud security benchmark v1),
    # `CIS-AKS:<id>`, `NIST-800-53:<id>`, and `PSRule:<rule>` where PSRule for Azure checks the same thing.
    # Sources: each rule's doc page.
    controls: tuple[str, ...] = ()
    # Row types a Fail depends on: when collection missed any of them for the subscriptions involved
    # (or anywhere, for types in `needs_anywhere`), the engine reports Unknown instead of Fail.
    needs: tuple[str, ...] = ()
    needs_anywhere: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The one serialised form of the metadata: `rules --json`, rules.json in the archive, the catalog hash."""
        data = asdict(self)
        data.update(severity=self.severity.value, scope=self.scope.value,
                    statuses=[s.value for s in Status if s in self.statuses], links=list(self.links),
                    controls=list(self.controls),
                    needs=list(self.needs), needs_anywhere=list(self.needs_anywhere))
        return data


@dataclass
class Result:
    status: Status
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: dict[str, str] = field(default_factory=dict)  # extra placeholder values for the remediation text


def passed(message: str, **evidence: Any) -> Result:
    return Result(Status.PASS, message, evidence)


def failed(message: str, fix: dict[str, str] | None = None, **evidence: Any) -> Result:
    return Result(Status.FAIL, message, evidence, fix or {})


def unknown(message: str, **evidence: Any) -> Result:
    return Result(Status.UNKNOWN, message, evidence)


def not_applicable(message: str, **evidence: Any) -> Result:
    return Result(Status.NOT_APPLICABLE, message, evidence)


@dataclass(frozen=True)
class Rule:
    meta: RuleMeta
    check: Callable[[Any], Result]


RULES: dict[str, Rule] = {}
# Ids reserved in the public contract but not evaluated yet.
RESERVED: dict[str, str] = {}


def rule(meta: RuleMeta) -> Callable[[Callable[[Any], Result]], Callable[[Any], Result]]:
    def register(check: Callable[[Any], Result]) -> Callable[[Any], Result]:
        if meta.id in RULES or meta.id in RESERVED:
            raise ValueError(f"duplicate rule id {meta.id}")
        RULES[meta.id] = Rule(meta, check)
        return check

    return register


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")  # registration is the import's side effect


@cache
def catalog() -> list[Rule]:
    """Every rule, ordered by id (the package's modules are imported once to register them)."""
    _discover()
    return [RULES[key] for key in sorted(RULES)]


def catalog_document() -> list[dict[str, Any]]:
    return [r.meta.to_dict() for r in catalog()] + [{"id": rule_id, "reserved": text}
                                                     for rule_id, text in RESERVED.items()]


def catalog_version() -> str:
    """Short hash of exactly the catalog document that `rules --json` prints and the archive stores."""
    text = json.dumps(catalog_document(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
