"""Effective registry pull permission of a principal, from role assignments at every ancestor scope.

Semantics (Azure RBAC): a permission is granted by a role when one permission block has an
`actions`/`dataActions` pattern matching it and no `notActions`/`notDataActions` pattern of that
same block matching it. `*` is a wildcard over any characters; matching is case-insensitive.
`notActions` subtract within a role; they are not deny assignments.

Which permission means "can pull" depends on the registry's role-assignment mode:
- LegacyRegistryPermissions (default): the action `Microsoft.ContainerRegistry/registries/pull/read`,
  so AcrPull, AcrPush, Owner, Contributor, Reader and matching custom roles all grant pull;
- AbacRepositoryPermissions: only the data action `.../registries/repositories/content/read`;
  AcrPull/AcrPush and Owner/Contributor/Reader give no data-plane access there.

Custom roles that reach pull only through a wildcard (`*`, `*/read`, `Microsoft.ContainerRegistry/*`, ...) are
not trusted: ACR honours wildcards in custom roles only in tenants with Resource Manager private link, which no
row shows. Built-in roles keep wildcard semantics (ACR documents Reader, Owner and Contributor as pulling).

A deny assignment whose scope covers the registry, whose permissions match pull in the registry's mode and whose
principals include the identity (directly, through a group, or Everyone) and do not exclude it, beats any grant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from auditors.model import EVERYONE, DenyAssignment, Inventory, Permission, RoleAssignment, RoleDefinition

LEGACY_MODE = "LegacyRegistryPermissions"
ABAC_MODE = "AbacRepositoryPermissions"
MODES = (LEGACY_MODE, ABAC_MODE)
PULL_ACTION = "Microsoft.ContainerRegistry/registries/pull/read"
REPOSITORY_READ_DATA_ACTION = "Microsoft.ContainerRegistry/registries/repositories/content/read"

ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"


def _builtin(guid: str, name: str, actions=(), not_actions=(), data_actions=()) -> RoleDefinition:
    return RoleDefinition(
        guid, name, "BuiltInRole", [Permission(tuple(actions), tuple(not_actions), tuple(data_actions), ())], "builtin"
    )


_REPO = "Microsoft.ContainerRegistry/registries/repositories"
# Built-in roles relevant to pull, used when a snapshot lacks built-in definitions (subscription-scope
# queries do not return them). Definitions present in the snapshot take precedence.
BUILTIN_ROLES = {
    role.guid: role
    for role in (
        _builtin(ACR_PULL, "AcrPull", [PULL_ACTION]),
        _builtin("8311e382-0749-4cb8-b61a-304f252e45ec", "AcrPush",
                 [PULL_ACTION, "Microsoft.ContainerRegistry/registries/push/write"]),
        _builtin("c2f4ef07-c644-48eb-af81-4b1b4947fb11", "AcrDelete",
                 ["Microsoft.ContainerRegistry/registries/artifacts/delete"]),
        _builtin("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner", ["*"]),
        _builtin(
            "b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor", ["*"],
            ["Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
             "Microsoft.Authorization/elevateAccess/Action"],
        ),
        _builtin("acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader", ["*/read"]),
        _builtin("b93aa761-3e63-49ed-ac28-beffa264f7ac", "Container Registry Repository Reader",
                 data_actions=[f"{_REPO}/content/read", f"{_REPO}/metadata/read"]),
        _builtin("2a1e307c-b015-4ebd-883e-5b7698a07328", "Container Registry Repository Writer",
                 data_actions=[f"{_REPO}/content/read", f"{_REPO}/metadata/read",
                               f"{_REPO}/content/write", f"{_REPO}/metadata/write"]),
        _builtin("2efddaa5-3f1f-4df3-97df-af3f13818f4c", "Container Registry Repository Contributor",
                 data_actions=[f"{_REPO}/metadata/read", f"{_REPO}/content/read", f"{_REPO}/metadata/write",
                               f"{_REPO}/content/write", f"{_REPO}/metadata/delete", f"{_REPO}/content/delete"]),
        _builtin("577a9874-89fd-4f24-9dbd-b5034d0ad23a", "Container Registry Data Importer and Data Reader",
                 ["Microsoft.ContainerRegistry/registries/importImage/action",
                  "Microsoft.ContainerRegistry/registries/read", PULL_ACTION],
                 data_actions=[f"{_REPO}/content/read", f"{_REPO}/metadata/read",
                               "Microsoft.ContainerRegistry/registries/catalog/read"]),
    )
}
GRANTS, WILDCARD_ONLY, NO_GRANT = "grants", "wildcard-only", "no"
WILDCARD_RULE = ("ACR supports wildcard actions such as `Microsoft.ContainerRegistry/*/read` in custom roles only in "
                 "tenants configured with Azure Resource Manager private link; elsewhere, don't use wildcards and "
                 "specify all required registry actions individually")


@lru_cache(maxsize=4096)
def _pattern(text: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in text.split("*")), re.IGNORECASE)


def matches(pattern: str, permission: str) -> bool:
    return _pattern(pattern).fullmatch(permission) is not None


def _pull_patterns(block: Permission, mode: str) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    if mode == ABAC_MODE:
        return block.data_actions, block.not_data_actions, REPOSITORY_READ_DATA_ACTION
    return block.actions, block.not_actions, PULL_ACTION


def permits_pull(permissions: list[Permission], mode: str) -> list[str]:
    """The patterns of the first block that allows pull in this mode (not taken back by its not-patterns)."""
    for block in permissions:
        allowed, denied, wanted = _pull_patterns(block, mode)
        matched = [p for p in allowed if matches(p, wanted)]
        if matched and not any(matches(p, wanted) for p in denied):
            return matched
    return []


def grant_kind(definition: RoleDefinition, mode: str) -> str:
    """GRANTS, WILDCARD_ONLY (a custom role that reaches pull only through wildcards) or NO_GRANT."""
    wildcard = False
    for block in definition.permissions:
        matched = permits_pull([block], mode)
        if not matched:
            continue
        if definition.role_type.lower() != "customrole" or any("*" not in p for p in matched):
            return GRANTS
        wildcard = True
    return WILDCARD_ONLY if wildcard else NO_GRANT


def grants(definition: RoleDefinition, mode: str) -> bool:
    """Whether the role's permissions include pull under the given registry mode (wildcards included)."""
    return grant_kind(definition, mode) != NO_GRANT


def grants_in_any_mode(definition: RoleDefinition) -> bool:
    return any(grants(definition, mode) for mode in MODES)


@dataclass
class Grant:
    assignment_id: str
    role: str
    scope: str
    scope_label: str
    principal_id: str
    principal_type: str
    condition: str

    def evidence(self) -> dict:
        # The assignment's id begins with its scope, so the scope is written only for a grant without one.
        data = {"role": self.role, "scopeLevel": self.scope_label}
        data.update({"assignmentId": self.assignment_id} if self.assignment_id else {"scope": self.scope})
        if self.condition:
            data["condition"] = self.condition
        if self.principal_type.lower() in ("group", "foreigngroup"):
            data["group"] = self.principal_id
        return data


@dataclass
class Denial:
    """A deny assignment that blocks (or, with undecidable membership, may block) pull for the identity."""

    deny: DenyAssignment
    scope_label: str
    certain: bool
    why: str

    def evidence(self) -> dict:
        deny = self.deny
        return {"denyAssignment": deny.name or deny.id, "id": deny.id, "scope": deny.scope,
                "scopeLevel": self.scope_label, "description": deny.description or None,
                "createdBy": deny.created_by or None, "systemProtected": deny.system_protected,
                "appliesToChildScopes": deny.applies_to_children, "certain": self.certain, "why": self.why}


@dataclass
class PullAccess:
    """Outcome of the RBAC analysis for one principal on one registry, in one mode."""

    mode: str
    direct: list[Grant] = field(default_factory=list)
    via_groups: list[Grant] = field(default_factory=list)  # grants to groups whose membership is not known
    wildcard: list[Grant] = field(default_factory=list)  # custom roles that reach pull only through wildcards
    unresolved_roles: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    denials: list[Denial] = field(default_factory=list)
    deny_unchecked: str = ""  # why deny assignments could not be checked ('' when they were)

    @property
    def granted(self) -> bool:
        return bool(self.direct)

    @property
    def denied(self) -> list[Denial]:
        return [d for d in self.denials if d.certain]

    @property
    def unconditional(self) -> bool:
        return any(not g.condition for g in self.direct)


class RoleResolver:
    """Role definitions by GUID with per-mode grant results cached: each role is analysed once per run."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._grants: dict[tuple[str, str], bool | None] = {}
        self._group_grants: dict[tuple[str, str], tuple[list[Grant], list[str]]] = {}

    def definition(self, guid: str) -> RoleDefinition | None:
        return self.inventory.role_definitions.get(guid) or BUILTIN_ROLES.get(guid)

    def kind(self, guid: str, mode: str) -> str | None:
        """GRANTS, WILDCARD_ONLY or NO_GRANT, or None when the definition is not known."""
        key = (guid, mode)
        if key not in self._grants:
            definition = self.definition(guid)
            self._grants[key] = None if definition is None else grant_kind(definition, mode)
        return self._grants[key]

    def grants(self, guid: str, mode: str) -> bool | None:
        """True/False (wildcards included), or None when the definition is not known."""
        kind = self.kind(guid, mode)
        return None if kind is None else kind != NO_GRANT

    def grants_in_any_mode(self, guid: str) -> bool:
        return any(self.grants(guid, mode) for mode in MODES)

    def role_name(self, guid: str) -> str:
        definition = self.definition(guid)
        return definition.name if definition else guid

    def group_grants(self, scope: str, label: str, mode: str) -> tuple[list[tuple[Grant, str]], list[str]]:
        """Pull-granting assignments to groups at one scope, each with its grant kind, and the role ids of group
        assignments whose definition is unknown; computed once per scope and mode."""
        key = (scope, mode)
        cached = self._group_grants.get(key)
        if cached is None:
            granting, unresolved = [], []
            for assignment in self.inventory.group_assignments_by_scope.get(scope, ()):
                kind = self.kind(assignment.role_guid, mode)
                if kind is None:
                    unresolved.append(assignment.role_guid or assignment.id)
                elif kind != NO_GRANT:
                    granting.append((_grant(assignment, label, self), kind))
            cached = self._group_grants[key] = (granting, unresolved)
        return cached


def _grant(assignment: RoleAssignment, label: str, resolver: RoleResolver) -> Grant:
    return Grant(assignment.id, resolver.role_name(assignment.role_guid), assignment.scope, label,
                 assignment.principal_id, assignment.principal_type, assignment.condition)


def pull_access(principal_id: str, registry_id: str, mode: str, resolver: RoleResolver,
                group_members: dict[str, frozenset[str] | None] | None = None) -> PullAccess:
    """RBAC analysis. `group_members` maps group object ids to their service-principal members (from Microsoft
    Graph, or declared in the pairs file); None or absent: membership unknown, so grants to that group stay
    undecidable."""
    inventory = resolver.inventory
    group_members = group_members or {}
    scopes, ancestry_gap = inventory.ancestor_scopes(registry_id)
    labels = dict(scopes)
    access = PullAccess(mode)
    if ancestry_gap:
        access.gaps.append(ancestry_gap)
    if not inventory.tenant_scope_authorization:
        access.gaps.append(
            "the snapshot holds no management-group or root scope role data (it was collected at subscription "
            "scope), so inherited assignments may be missing"
        )
    for assignment in inventory.assignments_of(principal_id):
        label = labels.get(assignment.scope)
        if label is None:
            continue
        kind = resolver.kind(assignment.role_guid, mode)
        if kind is None:
            access.unresolved_roles.append(assignment.role_guid or assignment.id)
        elif kind != NO_GRANT:
            (access.direct if kind == GRANTS else access.wildcard).append(_grant(assignment, label, resolver))
    for scope, label in scopes:
        granting, unresolved = resolver.group_grants(scope, label, mode)
        access.unresolved_roles.extend(unresolved)
        for grant, kind in granting:
            members = group_members.get(grant.principal_id)
            if members is None:
                access.via_groups.append(grant)
            elif principal_id in members:
                (access.direct if kind == GRANTS else access.wildcard).append(grant)
    access.denials, access.deny_unchecked = deny_decisions(principal_id, registry_id, mode, inventory, scopes,
                                                           group_members)
    return access


def deny_decisions(principal_id: str, registry_id: str, mode: str, inventory: Inventory,
                   scopes: list[tuple[str, str]], group_members: dict[str, frozenset[str] | None]
                   ) -> tuple[list[Denial], str]:
    """Deny assignments at the registry or above it that block pull for the principal (certain), or may block
    it (a group in them whose membership is unknown); and why deny data is missing ('' when it is not)."""
    registry_key = scopes[0][0]
    denials = []
    for scope, label in scopes:
        for deny in inventory.deny_assignments_by_scope.get(scope, ()):
            if scope != registry_key and not deny.applies_to_children:
                continue
            if not permits_pull(deny.permissions, mode):
                continue
            covered, covered_why = _principal_in(principal_id, deny.principals, deny.groups, group_members)
            if covered is False:
                continue
            excluded, excluded_why = _principal_in(principal_id, deny.excluded, deny.groups, group_members,
                                                   everyone=False)
            if excluded is True:
                continue
            certain = covered is True and excluded is False
            why = covered_why if certain else "; ".join(w for w in (covered_why, excluded_why) if w)
            denials.append(Denial(deny, label, certain, why))
    return denials, inventory.deny_unchecked(registry_id)


def _principal_in(principal_id: str, principals: frozenset[str], groups: frozenset[str],
                  group_members: dict[str, frozenset[str] | None], everyone: bool = True) -> tuple[bool | None, str]:
    """Whether the principal is among these (True/False), or None when a group's unknown membership decides it."""
    if everyone and EVERYONE in principals:
        return True, "it applies to Everyone"
    if principal_id in principals:
        return True, "it names the identity itself"
    unknown = []
    for group in principals & groups:
        members = group_members.get(group)
        if members is None:
            unknown.append(group)
        elif principal_id in members:
            return True, f"it names group {group}, of which the identity is a member"
    if unknown:
        return None, f"it names group(s) {', '.join(sorted(unknown)[:3])} whose members are not known"
    return False, ""
