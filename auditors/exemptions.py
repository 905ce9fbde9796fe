"""Exemptions: approved, expiring waivers that take findings out of the failing set.

File (YAML or JSON, read through `auditors.safe_yaml`):

    exemptions:
      - id: EX-0042                                            # unique (case-insensitive)
        rules: [AKS-ACR-001, AKS-ACR-003]                      # rule ids or globs (AKS-ACR-00*)
        clusters: {name: "aks-legacy-*", subscription: "3333*"}  # id, name, tag, subscription (as the pairs file)
        registries: {name: "fabrikamlegacy"}                   # id, name, tag, subscription
        justification: "SP cluster until migration"            # required
        approvedBy: "secops@example.com"                       # required
        expiresOn: 2027-03-31                                  # required, YYYY-MM-DD
        ticket: CHG-1234                                       # optional

Which findings an exemption covers
- Its rules: each listed id, or every known id a glob matches. AKS-ACR-013 (exemption expired) is never
  covered: an exemption must not hide the report that exemptions lapsed.
- Its resources: each selector it gives constrains that kind of resource of the finding: `clusters` the
  finding's cluster, `registries` its registry. A finding without that kind of resource is not constrained by
  that selector, but it must have at least one resource a given selector constrains. So `clusters` only
  covers cluster findings and the pairs of those clusters; `registries` only covers registry findings and the
  pairs of those registries; both cover cluster findings of the clusters, registry findings of the registries
  and the pairs where both match (the issue's own example: rules AKS-ACR-006 and -012, which are cluster
  rules, with `clusters` and `registries` given). Within a selector every given criterion must hold and any
  glob of a criterion may match (`ClusterSelector.matches`, shared with the pairs file). With `rule_scopes`
  the loader rejects entries whose selectors can never meet the scope of a rule they name (`registries` only on
  a cluster rule, `clusters` only on a registry rule). A pair finding whose registry is not in the inventory
  (registry=None) is matched by its cluster alone.
- Several entries may cover one finding; `match` returns the first in force in file order, and every entry
  that selected the finding counts it (`stale()` lists entries in force that selected nothing).

Expiry: an exemption is in force through its `expiresOn` date (UTC) and expired from the day after.
- A newly edited file is checked strictly (`expired_grace_days=0`, e.g. in CI or a validate command): a date
  in the past is an error, like a date more than `max_days` ahead.
- A scheduled run loads with a grace (default 30 days): an entry that expired at most that many days ago
  loads, marked expired. It exempts nothing (its findings come back) and `expired()` lists it, so the run
  reports AKS-ACR-013 (Medium) naming it. Older expired entries are errors that fail the run at start.
Why: the run is stateless (no memory of the previous run's file), so "expired since it was approved" has to
be read from the date alone; failing the whole audit the morning after an approval lapses would stop every
finding exactly when the lapse needs reporting, while a bounded grace still forces the file to be cleaned.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from auditors.model import Cluster, Registry
from auditors.pairing import ClusterSelector, PairsFileError, _globs
from auditors.safe_yaml import DEFAULT_MAX_BYTES, DocumentError, parse_document, read_capped

EXPIRY_RULE = "AKS-ACR-013"
EXPIRED_GRACE_DAYS = 30
EXPIRING_SOON_DAYS = 14
DEFAULT_MAX_DAYS = 365
KIND = "exemptions file"
_ENTRY_KEYS = ("id", "rules", "clusters", "registries", "justification", "approvedBy", "expiresOn", "ticket")
_SELECTOR_KEYS = ("id", "name", "tag", "subscription")
_GLOB_CHARACTERS = frozenset("*?[")
_SCOPE_OF_SELECTORS = {(True, False): "cluster", (False, True): "registry", (True, True): "pair"}
_ACTIVE, _EXPIRING, _EXPIRED = "active", "expiring", "expired"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_Report = Callable[[str, str], None]  # (field, problem)


class ExemptionsError(ValueError):
    """Every problem of an exemptions file, one line each, each naming the file, the entry and the field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, eq=False)
class Exemption:
    id: str
    index: int  # position in the file
    rules: tuple[str, ...]  # as written (upper-cased): ids and globs
    rule_ids: frozenset[str]  # the known rule ids those name
    clusters: ClusterSelector | None
    registries: ClusterSelector | None
    justification: str
    approved_by: str
    expires_on: date
    ticket: str = ""

    def is_expired(self, today: date) -> bool:
        return self.expires_on < today

    def status(self, today: date, soon_days: int = EXPIRING_SOON_DAYS) -> str:
        if self.is_expired(today):
            return _EXPIRED
        return _EXPIRING if (self.expires_on - today).days <= soon_days else _ACTIVE

    def selects(self, rule_id: str, cluster: Cluster | None, registry: Registry | None) -> bool:
        """Whether this entry covers the finding, regardless of expiry (the reference semantics)."""
        constrained = (cluster is not None and self.clusters is not None) or (
            registry is not None and self.registries is not None)
        return (rule_id.upper() in self.rule_ids and constrained
                and (cluster is None or self.clusters is None or self.clusters.matches(cluster))
                and (registry is None or self.registries is None or self.registries.matches(registry)))


class ExemptionSet:
    """Loaded exemptions, matched against findings with caching; counts what each entry selected."""

    def __init__(self, exemptions: Collection[Exemption] = (), *, today: date, path: str = "",
                 sha256: str = "") -> None:
        self.exemptions = tuple(exemptions)
        self.today, self.path, self.sha256 = today, path, sha256
        self._in_force = tuple(not e.is_expired(today) for e in self.exemptions)
        self._counts = [0] * len(self.exemptions)
        by_rule: dict[str, set[int]] = {}
        for position, exemption in enumerate(self.exemptions):
            for rule_id in exemption.rule_ids:
                by_rule.setdefault(rule_id, set()).add(position)
        self._by_rule = {key: frozenset(positions) for key, positions in by_rule.items()}
        self._distinct = {"clusters": _distinct_selectors(self.exemptions, "clusters"),
                          "registries": _distinct_selectors(self.exemptions, "registries")}
        self._with = {kind: frozenset(i for i, e in enumerate(self.exemptions) if getattr(e, kind) is not None)
                      for kind in ("clusters", "registries")}
        self._without = {kind: frozenset(range(len(self.exemptions))) - positions
                         for kind, positions in self._with.items()}
        self._selected: dict[tuple[str, str, str], tuple[int, ...]] = {}
        self._resource_hits: dict[tuple[str, str], frozenset[int]] = {}

    def __len__(self) -> int:
        return len(self.exemptions)

    def __iter__(self) -> Iterator[Exemption]:
        return iter(self.exemptions)

    def match(self, rule_id: str, cluster: Cluster | None, registry: Registry | None) -> Exemption | None:
        """The first exemption in force that covers this finding, or None. Call once per reported finding:
        each call counts the finding for every entry that selects it (expired ones too)."""
        key = (rule_id, cluster.id if cluster else "", registry.id if registry else "")
        selected = self._selected.get(key)
        if selected is None:
            selected = self._selected[key] = self._select(rule_id, cluster, registry)
        found = None
        for position in selected:
            self._counts[position] += 1
            if found is None and self._in_force[position]:
                found = self.exemptions[position]
        return found

    def matched(self, exemption: Exemption) -> int:
        """How many findings this entry selected so far."""
        return self._counts[self.exemptions.index(exemption)]

    @property
    def match_counts(self) -> tuple[int, ...]:
        """Findings each entry selected so far, in file order."""
        return tuple(self._counts)

    def add_matches(self, counts: tuple[int, ...]) -> None:
        """Findings each entry selected in another process (a worker's share)."""
        self._counts = [mine + theirs for mine, theirs in zip(self._counts, counts, strict=True)]

    def active(self, today: date | None = None) -> list[Exemption]:
        today = today or self.today
        return [e for e in self.exemptions if not e.is_expired(today)]

    def expired(self, today: date | None = None) -> list[Exemption]:
        """Entries that lapsed: each yields an AKS-ACR-013 finding."""
        today = today or self.today
        return [e for e in self.exemptions if e.is_expired(today)]

    def expiring_within(self, today: date | None = None, days: int = EXPIRING_SOON_DAYS) -> list[Exemption]:
        """Entries in force that expire within `days` (inclusive), soonest first."""
        today = today or self.today
        soon = [e for e in self.exemptions if not e.is_expired(today) and (e.expires_on - today).days <= days]
        return sorted(soon, key=lambda e: e.expires_on)

    def stale(self) -> list[Exemption]:
        """Entries in force that selected no finding so far (expired ones are reported by AKS-ACR-013)."""
        return [e for e, in_force, count in zip(self.exemptions, self._in_force, self._counts, strict=True)
                if in_force and not count]

    def as_records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per entry, for the evidence archive."""
        return [
            {
                "id": e.id,
                "rules": list(e.rules),
                "clusters": selector_record(e.clusters),
                "registries": selector_record(e.registries),
                "justification": e.justification,
                "approvedBy": e.approved_by,
                "expiresOn": e.expires_on.isoformat(),
                "ticket": e.ticket,
                "status": e.status(self.today),
                "matched": count,
            }
            for e, count in zip(self.exemptions, self._counts, strict=True)
        ]

    def _select(self, rule_id: str, cluster: Cluster | None, registry: Registry | None) -> tuple[int, ...]:
        """Positions of the entries covering the finding, in file order (the semantics of `Exemption.selects`)."""
        candidates = self._by_rule.get(rule_id.upper())
        if not candidates:
            return ()
        constrained: frozenset[int] = frozenset()
        if cluster is not None:
            candidates = candidates & (self._hits("clusters", cluster) | self._without["clusters"])
            constrained |= self._with["clusters"]
        if registry is not None:
            candidates = candidates & (self._hits("registries", registry) | self._without["registries"])
            constrained |= self._with["registries"]
        return tuple(sorted(candidates & constrained))

    def _hits(self, attribute: str, resource: Cluster | Registry) -> frozenset[int]:
        """Positions of entries whose `attribute` selector matches the resource: each distinct selector is
        evaluated once per resource."""
        key = (attribute, resource.id)
        hits = self._resource_hits.get(key)
        if hits is None:
            hits = self._resource_hits[key] = frozenset().union(
                *(positions for selector, positions in self._distinct[attribute] if selector.matches(resource)))
        return hits


def _distinct_selectors(exemptions: tuple[Exemption, ...],
                        attribute: str) -> list[tuple[ClusterSelector, frozenset[int]]]:
    """Each distinct selector with the positions of the entries using it (files repeat selectors a lot)."""
    grouped: dict[tuple, tuple[ClusterSelector, set[int]]] = {}
    for position, exemption in enumerate(exemptions):
        selector = getattr(exemption, attribute)
        if selector is not None:
            criteria = (tuple(selector.ids), tuple(selector.names), tuple(sorted(selector.tags.items())),
                        tuple(selector.subscriptions))
            grouped.setdefault(criteria, (selector, set()))[1].add(position)
    return [(selector, frozenset(positions)) for selector, positions in grouped.values()]


def selector_record(selector: ClusterSelector | None) -> dict[str, list[str]] | None:
    if selector is None:
        return None
    record = {"id": selector.ids, "name": selector.names,
              "tag": [f"{key}={glob}" for key, glob in selector.tags.items()], "subscription": selector.subscriptions}
    return {key: list(values) for key, values in record.items() if values}


# -- loading ------------------------------------------------------------------------------------------------


def load_exemptions(path: str | Path, *, rule_ids: Collection[str], today: date, max_days: int = DEFAULT_MAX_DAYS,
                    expired_grace_days: int = EXPIRED_GRACE_DAYS, rule_scopes: Mapping[str, str] | None = None,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> ExemptionSet:
    """Read and validate an exemptions file; raise `ExemptionsError` listing every problem.

    `rule_ids`: the known rule ids. `today`: the run's UTC date. `expired_grace_days`: how long after expiry an
    entry still loads (as expired); 0 validates strictly. `rule_scopes` (rule id -> cluster/registry/pair, e.g.
    from the catalog's RuleMeta.scope) lets the loader reject entries that could never match a named rule."""
    try:
        data = read_capped(path, max_bytes=max_bytes, kind=KIND)
        document = parse_document(data, path=path, kind=KIND)
    except DocumentError as exc:
        raise ExemptionsError([str(exc)]) from exc
    problems: list[str] = []
    entries = _entries(document, str(path), problems)
    known = _Known(frozenset(r.upper() for r in rule_ids), {k.upper(): str(v) for k, v in (rule_scopes or {}).items()})
    window = _Window(today, max_days, expired_grace_days)
    exemptions: list[Exemption] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(entries):
        entry_id = _entry_id(entry)
        earlier = first_index.setdefault(entry_id.lower(), index) if entry_id else index
        if earlier != index:
            problems.append(f"{path}: exemptions[{index}] ({entry_id}): id: duplicate of exemptions[{earlier}]")
        exemption = _exemption(entry, index, str(path), known, window, problems)
        if exemption is not None:
            exemptions.append(exemption)
    if problems:
        raise ExemptionsError(problems)
    return ExemptionSet(exemptions, today=today, path=str(path), sha256=hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class _Known:
    rule_ids: frozenset[str]
    scopes: dict[str, str]


@dataclass(frozen=True)
class _Window:
    today: date
    max_days: int
    grace_days: int


def _entries(document: Any, path: str, problems: list[str]) -> list:
    if not isinstance(document, dict) or "exemptions" not in document:
        problems.append(f"{path}: expected a mapping with `exemptions` (a list of entries)")
        return []
    unknown = sorted(str(k) for k in document if k != "exemptions")
    if unknown:
        problems.append(f"{path}: unknown top-level key(s) {', '.join(unknown)}")
    entries = document["exemptions"]
    if entries is None:
        return []
    if not isinstance(entries, list):
        problems.append(f"{path}: `exemptions` must be a list")
        return []
    return entries


def _exemption(entry: Any, index: int, path: str, known: _Known, window: _Window,
               problems: list[str]) -> Exemption | None:
    if not isinstance(entry, dict):
        problems.append(f"{path}: exemptions[{index}]: must be a mapping with id, rules, clusters or registries, "
                        "justification, approvedBy, expiresOn")
        return None
    entry_id = _entry_id(entry)
    origin = f"{path}: exemptions[{index}]" + (f" ({entry_id})" if entry_id else "")
    count_before = len(problems)

    def report(field: str, problem: str) -> None:
        problems.append(f"{origin}: {field}: {problem}")

    if not entry_id:
        report("id", "required: a non-empty string, unique in the file")
    unknown = sorted(str(k) for k in entry if k not in _ENTRY_KEYS)
    if unknown:
        problems.append(f"{origin}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_ENTRY_KEYS)}")
    clusters = _selector(entry.get("clusters"), f"{origin}: clusters", problems)
    registries = _selector(entry.get("registries"), f"{origin}: registries", problems)
    if entry.get("clusters") is None and entry.get("registries") is None:
        report("clusters/registries", "at least one is required: an exemption must select what it exempts")
    selected_scope = _SCOPE_OF_SELECTORS.get((entry.get("clusters") is not None, entry.get("registries") is not None))
    rules, rule_ids = _rules(entry.get("rules"), known, selected_scope, report)
    justification = _required_text(entry.get("justification"), "justification", report)
    approved_by = _required_text(entry.get("approvedBy"), "approvedBy", report)
    expires_on = _expiry(entry.get("expiresOn"), window, report)
    ticket = entry.get("ticket")
    if ticket is not None and (isinstance(ticket, bool) or not isinstance(ticket, str | int)):
        report("ticket", "must be a string")
    if len(problems) > count_before:
        return None
    return Exemption(
        id=entry_id, index=index, rules=rules, rule_ids=rule_ids, clusters=clusters, registries=registries,
        justification=justification, approved_by=approved_by, expires_on=expires_on,
        ticket="" if ticket is None else str(ticket).strip(),
    )


def _entry_id(entry: Any) -> str:
    raw_id = entry.get("id") if isinstance(entry, dict) else None
    return raw_id.strip() if isinstance(raw_id, str) else ""


def _selector(value: Any, origin: str, problems: list[str]) -> ClusterSelector | None:
    """The pairs file's cluster selector, for clusters or registries (both have id, name, subscription, tags)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        problems.append(f"{origin}: must be a mapping with any of {', '.join(_SELECTOR_KEYS)}")
        return None
    unknown = sorted(str(k) for k in value if k not in _SELECTOR_KEYS)
    if unknown:
        problems.append(f"{origin}: unknown key(s) {', '.join(unknown)}; use {', '.join(_SELECTOR_KEYS)}")
    globs: dict[str, list[str]] = {}
    for key in _SELECTOR_KEYS:
        try:
            globs[key] = _globs(value.get(key), origin, key)
        except PairsFileError as exc:
            problems.append(str(exc))
    if unknown or len(globs) < len(_SELECTOR_KEYS):
        return None
    tags = dict(_tag_glob(text) for text in globs["tag"])
    return ClusterSelector(origin=origin, registries=[], ids=globs["id"], names=globs["name"], tags=tags,
                           subscriptions=globs["subscription"])


def _tag_glob(text: str) -> tuple[str, str]:
    key, _, glob = text.partition("=")
    return key.strip(), glob.strip() or "*"


def _rules(value: Any, known: _Known, selected_scope: str | None,
           report: _Report) -> tuple[tuple[str, ...], frozenset[str]]:
    """The rules as written, and the known ids they cover whose findings the selectors can meet."""
    items = [value] if isinstance(value, str) else value
    if not (isinstance(items, list) and items and all(isinstance(r, str) and r.strip() for r in items)):
        report("rules", "required: a list of rule ids or globs such as AKS-ACR-00*")
        return (), frozenset()
    patterns = tuple(r.strip().upper() for r in items)
    covered: set[str] = set()
    for pattern in patterns:
        problem, rule_ids = _covered_rule_ids(pattern, known, selected_scope)
        if problem:
            report("rules", problem)
        covered |= rule_ids
    return patterns, frozenset(covered)


def _covered_rule_ids(pattern: str, known: _Known, selected_scope: str | None) -> tuple[str, frozenset[str]]:
    """(problem or '', known rule ids) for one id or glob."""
    if pattern == EXPIRY_RULE:
        return f"{EXPIRY_RULE} reports expired exemptions and cannot itself be exempted", frozenset()
    is_glob = bool(_GLOB_CHARACTERS & set(pattern))
    if is_glob:
        named = {r for r in known.rule_ids if fnmatch.fnmatchcase(r, pattern)} - {EXPIRY_RULE}
    else:
        named = {pattern} & known.rule_ids
    if not named:
        return (f"{pattern} matches no known rule id" if is_glob else f"{pattern} is not a known rule id"), frozenset()
    fitting = frozenset(r for r in named if _fits(known.scopes.get(r), selected_scope))
    if fitting or selected_scope is None:
        return "", fitting
    scopes = " and ".join(sorted({known.scopes[r] for r in named}))
    return (f"{pattern} reports {scopes} findings, which an exemption selecting {_describe(selected_scope)} "
            "never matches"), fitting


def _fits(rule_scope: str | None, selected_scope: str | None) -> bool:
    """Whether an entry selecting `selected_scope` resources can cover findings of a rule of `rule_scope`."""
    if rule_scope is None or selected_scope is None or rule_scope == "pair" or selected_scope == "pair":
        return True
    return rule_scope == selected_scope


def _describe(scope: str) -> str:
    return {"cluster": "clusters only", "registry": "registries only", "pair": "clusters and registries"}[scope]


def _required_text(value: Any, field: str, report: _Report) -> str:
    if not isinstance(value, str) or not value.strip():
        report(field, "required: a non-empty string")
        return ""
    return value.strip()


def _expiry(value: Any, window: _Window, report: _Report) -> date:
    expires_on = _as_date(value)
    if expires_on is None:
        report("expiresOn", "required: a date YYYY-MM-DD" if value is None
               else f"{value!r} is not a date YYYY-MM-DD (no time of day)")
        return window.today
    days_ahead = (expires_on - window.today).days
    if days_ahead > window.max_days:
        report("expiresOn", f"{expires_on} is {days_ahead} days ahead; at most {window.max_days} are allowed")
    elif -days_ahead > window.grace_days:
        report("expiresOn", f"{expires_on} is in the past" if window.grace_days == 0 else
               f"{expires_on} expired {-days_ahead} days ago (more than {window.grace_days}); renew or remove it")
    return expires_on


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None
