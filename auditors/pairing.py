"""Which registries each cluster pulls from, and how we know.

Three sources, merged per (cluster, registry):
- `tag`: the cluster tag `acr-pull-registries` (registry names, login servers or resource ids);
- `pairs-file`: `--pairs FILE` entries matching clusters by id, name, tag or subscription glob;
- `role-assignment`: the cluster's pull principal holds a pull-granting role at a registry's own
  scope or its resource group's scope.
A declared registry that is not in the inventory becomes an unresolved pair (verdicts `Unknown`).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

from auditors.arm import is_guid, norm_id
from auditors.identity import pull_principal
from auditors.model import Cluster, Inventory
from auditors.rbac import RoleResolver
from auditors.safe_yaml import DocumentError, load_document

PAIR_TAG = "acr-pull-registries"
MAX_DECLARED_REGISTRIES = 100  # per cluster tag: more is a mistake, not an estate
SOURCE_TAG, SOURCE_FILE, SOURCE_RBAC, SOURCE_OBSERVED = "tag", "pairs-file", "role-assignment", "observed"
_SEPARATORS = re.compile(r"[\s,;]+")


class PairsFileError(Exception):
    """The pairs file is unusable; the message names the file, the entry and the problem."""


@dataclass
class ClusterSelector:
    origin: str
    registries: list[str]
    ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    subscriptions: list[str] = field(default_factory=list)

    def matches(self, cluster: Cluster) -> bool:
        """Every given criterion must hold; within one criterion any glob may match."""
        checks = [
            (self.ids, norm_id(cluster.id)),
            (self.names, cluster.name.lower()),
            (self.subscriptions, cluster.subscription_id),
        ]
        for globs, value in checks:
            if globs and not any(fnmatch.fnmatchcase(value, g) for g in globs):
                return False
        cluster_tags = {k.lower(): v for k, v in cluster.tags.items()}
        for key, glob in self.tags.items():
            if key not in cluster_tags or not fnmatch.fnmatchcase(cluster_tags[key].lower(), glob):
                return False
        return True


@dataclass
class PairsConfig:
    selectors: list[ClusterSelector] = field(default_factory=list)
    principals: dict[str, str] = field(default_factory=dict)  # service principal appId -> object id
    groups: dict[str, frozenset[str]] = field(default_factory=dict)  # group object id -> known member ids


def _globs(value, origin: str, key: str) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v.strip() for v in items):
        raise PairsFileError(f"{origin}: `{key}` must be a string or a list of strings")
    return [norm_id(v) if key == "id" else v.strip().lower() for v in items]


def _shown(value, limit: int = 60) -> str:
    """A value from the file as it can be shown in a one-line message: plain text as it is, anything else (line
    breaks, other types) as Python writes it; cut to `limit`."""
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _keys(keys, limit: int = 5) -> str:
    shown = sorted(_shown(k) for k in keys)
    return ", ".join(shown[:limit]) + (f" (+{len(shown) - limit} more)" if len(shown) > limit else "")


def _selector(entry, origin: str) -> ClusterSelector:
    if not isinstance(entry, dict):
        raise PairsFileError(f"{origin}: each pair entry must be a mapping with `clusters` and `registries`")
    unknown_keys = set(entry) - {"clusters", "registries", "description"}
    if unknown_keys:
        raise PairsFileError(f"{origin}: unknown key(s) {_keys(unknown_keys)}")
    registries = entry.get("registries")
    if isinstance(registries, str):
        registries = [t for t in _SEPARATORS.split(registries) if t]
    if not isinstance(registries, list) or not registries or \
            not all(isinstance(r, str) and r.strip() for r in registries):
        raise PairsFileError(f"{origin}: `registries` must list at least one registry name, login server or id")
    match = entry.get("clusters")
    if not isinstance(match, dict) or not match:
        raise PairsFileError(f"{origin}: `clusters` must be a mapping with any of id, name, tag, subscription")
    bad = set(match) - {"id", "name", "tag", "subscription"}
    if bad:
        raise PairsFileError(f"{origin}: `clusters` has unknown key(s) {_keys(bad)}; "
                             "use id, name, tag, subscription")
    tags: dict[str, str] = {}
    for text in _globs(match.get("tag"), origin, "tag"):
        key, _, value = text.partition("=")
        tags[key.strip()] = value.strip() or "*"
    return ClusterSelector(
        origin=origin,
        registries=[r.strip() for r in registries],
        ids=_globs(match.get("id"), origin, "id"),
        names=_globs(match.get("name"), origin, "name"),
        tags=tags,
        subscriptions=_globs(match.get("subscription"), origin, "subscription"),
    )


def load_pairs_file(path: str | Path) -> PairsConfig:
    """Read a YAML or JSON pairs file:

    pairs:
      - clusters: {name: "aks-prod-*", tag: "env=prod", subscription: "1111*", id: "/subscriptions/..."}
        registries: [acrprod, acrshared.azurecr.io]
    principals:            # optional: service principal appId -> object id, for SP clusters
      <appId>: <objectId>
    groups:                # optional: groups whose membership you know (object id -> member object ids);
      <groupId>: []        # grants to these groups are then decided, not reported as Unknown
    """
    path = Path(path)
    try:
        document = load_document(path, kind="pairs file")
    except DocumentError as exc:
        raise PairsFileError(str(exc)) from None
    if not isinstance(document, dict) or not ({"pairs", "principals", "groups"} & set(document)):
        raise PairsFileError(f"{path}: expected a mapping with `pairs` (and optionally `principals`, `groups`)")
    unknown_keys = set(document) - {"pairs", "principals", "groups"}
    if unknown_keys:
        raise PairsFileError(f"{path}: unknown top-level key(s) {_keys(unknown_keys)}")
    entries = document.get("pairs")
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise PairsFileError(f"{path}: `pairs` must be a list")
    config = PairsConfig([_selector(e, f"{path}: pairs[{i}]") for i, e in enumerate(entries)])
    principals = document.get("principals") or {}
    if not isinstance(principals, dict):
        raise PairsFileError(f"{path}: `principals` must map service principal appIds to object ids")
    for app_id, object_id in principals.items():
        if not (is_guid(str(app_id)) and is_guid(str(object_id))):
            raise PairsFileError(f"{path}: principals: {_shown(app_id)}: {_shown(object_id)} is not a pair of GUIDs")
        config.principals[str(app_id).lower()] = str(object_id).lower()
    groups = document.get("groups") or {}
    if not isinstance(groups, dict):
        raise PairsFileError(f"{path}: `groups` must map group object ids to lists of member object ids")
    for group_id, members in groups.items():
        members = members or []
        if not is_guid(str(group_id)) or not isinstance(members, list) or not all(is_guid(str(m)) for m in members):
            raise PairsFileError(f"{path}: groups: {_shown(group_id)} must be a GUID mapping to a list of member GUIDs")
        config.groups[str(group_id).lower()] = frozenset(str(m).lower() for m in members)
    return config


@dataclass
class Pair:
    cluster_key: str
    registry_key: str  # '' when the declared registry is not in the inventory
    declared: str
    sources: list[str]
    problem: str = ""


def resolve_registry(token: str, inventory: Inventory) -> tuple[list[str], str]:
    """Registry keys a declared token names (resource id, login server or name), or ([], problem)."""
    text = token.strip().lower()
    if text.startswith("/subscriptions/"):
        key = norm_id(text)
        if key in inventory.registries:
            return [key], ""
        return [], "no registry with this resource id in the inventory"
    if "." in text:
        host = text.split("://", 1)[-1].split("/", 1)[0]
        keys = inventory.registries_by_login_server.get(host, [])
        kind = "login server"
    else:
        keys = inventory.registries_by_name.get(text, [])
        kind = "name"
    if not keys:
        return [], f"no registry with this {kind} in the inventory"
    if len(keys) > 1:
        return [], f"the {kind} is ambiguous: {len(keys)} registries share it ({', '.join(sorted(keys)[:3])})"
    return list(keys), ""


def pairs_for_cluster(cluster: Cluster, inventory: Inventory, config: PairsConfig, roles: RoleResolver,
                      principal: str | None = None, observed=None) -> list[Pair]:
    """The cluster's pairs, each with every source that declared or implied it. `principal` is the cluster's
    pull principal when the caller already resolved it; `observed` (ObservedPulls) adds the registries the
    cluster was seen pulling from (images running, or failed pulls) that are in the inventory."""
    found: dict[str, Pair] = {}

    def add(key: str, registry_key: str, declared: str, source: str, problem: str = "") -> None:
        pair = found.get(key)
        if pair is None:
            pair = found[key] = Pair(cluster.key, registry_key, declared, [], problem)
        if source not in pair.sources:
            pair.sources.append(source)

    def declare(token: str, source: str) -> None:
        keys, problem = resolve_registry(token, inventory)
        for key in keys:
            add(key, key, token.strip(), source)
        if not keys:
            add(f"declared:{token.strip().lower()}", "", token.strip(), source, problem)

    tag_value = next((v for k, v in cluster.tags.items() if k.lower() == PAIR_TAG), "")
    tokens = list(dict.fromkeys(t.strip().lower() for t in _SEPARATORS.split(tag_value) if t.strip()))
    for token in tokens[:MAX_DECLARED_REGISTRIES]:
        declare(token, SOURCE_TAG)
    if len(tokens) > MAX_DECLARED_REGISTRIES:  # one finding says so, instead of millions of pairs
        left_out = len(tokens) - MAX_DECLARED_REGISTRIES
        add("declared:over-cap", "", f"{left_out:,} more registries", SOURCE_TAG,
            f"the {PAIR_TAG} tag names {len(tokens):,} registries; only the first {MAX_DECLARED_REGISTRIES} are "
            "audited (the tag is probably wrong)")
    for selector in config.selectors:
        if selector.matches(cluster):
            for token in selector.registries:
                declare(token, SOURCE_FILE)
    if principal is None:
        principal = pull_principal(cluster, inventory, config.principals).object_id
    for assignment in inventory.assignments_of(principal) if principal else ():
        if not roles.grants_in_any_mode(assignment.role_guid):
            continue
        if assignment.scope in inventory.registries:
            targets = [assignment.scope]
        else:
            targets = inventory.registries_by_group.get(assignment.scope, [])
        for key in targets:
            add(key, key, inventory.registries[key].name, SOURCE_RBAC)
    for host in observed.registries_of(cluster.key) if observed is not None else ():
        keys = inventory.registries_by_login_server.get(host, [])
        if len(keys) == 1:  # a registry of another tenant (or ambiguous): counted in AKS-ACR-002's evidence only
            add(keys[0], keys[0], host, SOURCE_OBSERVED)
    return list(found.values())
