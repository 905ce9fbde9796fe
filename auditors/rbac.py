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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from auditors.model import Inventory, Permission, RoleAssignment, RoleDefinition

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
                 data_actions=[f"{_REPO}/content/*", f"{_REPO}/metadata/*"]),
    )
}


@lru_cache(maxsize=4096)
def _pattern(text: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in text.split("*")), re.IGNORECASE)


def matches(pattern: str, permission: str) -> bool:
    return _pattern(pattern).fullmatch(permission) is not None


def grants(definition: RoleDefinition, mode: str) -> bool:
    """Whether the role's effective permissions include pull under the given registry mode."""
    for block in definition.permissions:
        if mode == ABAC_MODE:
            allowed, denied, wanted = block.data_actions, block.not_data_actions, REPOSITORY_READ_DATA_ACTION
        else:
            allowed, denied, wanted = block.actions, block.not_actions, PULL_ACTION
        if any(matches(p, wanted) for p in allowed) and not any(matches(p, wanted) for p in denied):
            return True
    return False


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
        data = {"role": self.role, "scope": self.scope, "scopeLevel": self.scope_label,
                "assignmentId": self.assignment_id}
        if self.condition:
            data["condition"] = self.condition
        if self.principal_type.lower() in ("group", "foreigngroup"):
            data["group"] = self.principal_id
        return data


@dataclass
class PullAccess:
    """Outcome of the RBAC analysis for one principal on one registry, in one mode."""

    mode: str
    direct: list[Grant] = field(default_factory=list)
    via_groups: list[Grant] = field(default_factory=list)
    unresolved_roles: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    @property
    def granted(self) -> bool:
        return bool(self.direct)

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

    def grants(self, guid: str, mode: str) -> bool | None:
        """True/False, or None when the definition is not known."""
        key = (guid, mode)
        if key not in self._grants:
            definition = self.definition(guid)
            self._grants[key] = None if definition is None else grants(definition, mode)
        return self._grants[key]

    def grants_in_any_mode(self, guid: str) -> bool:
        return any(self.grants(guid, mode) for mode in MODES)

    def role_name(self, guid: str) -> str:
        definition = self.definition(guid)
        return definition.name if definition else guid

    def group_grants(self, scope: str, label: str, mode: str) -> tuple[list[Grant], list[str]]:
        """Pull-granting assignments to groups at one scope, and the role ids of group assignments whose
        definition is unknown; computed once per scope and mode."""
        key = (scope, mode)
        cached = self._group_grants.get(key)
        if cached is None:
            granting, unresolved = [], []
            for assignment in self.inventory.group_assignments_by_scope.get(scope, ()):
                granted = self.grants(assignment.role_guid, mode)
                if granted:
                    granting.append(_grant(assignment, label, self))
                elif granted is None:
                    unresolved.append(assignment.role_guid or assignment.id)
            cached = self._group_grants[key] = (granting, unresolved)
        return cached


def _grant(assignment: RoleAssignment, label: str, resolver: RoleResolver) -> Grant:
    return Grant(assignment.id, resolver.role_name(assignment.role_guid), assignment.scope, label,
                 assignment.principal_id, assignment.principal_type, assignment.condition)


def pull_access(principal_id: str, registry_id: str, mode: str, resolver: RoleResolver,
                group_members: dict[str, frozenset[str]] | None = None) -> PullAccess:
    """RBAC analysis; `group_members` maps group object ids to their known members (declared by the user),
    so grants to those groups resolve; grants to other groups stay undecidable."""
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
        granted = resolver.grants(assignment.role_guid, mode)
        if granted:
            access.direct.append(_grant(assignment, label, resolver))
        elif granted is None:
            access.unresolved_roles.append(assignment.role_guid or assignment.id)
    for scope, label in scopes:
        granting, unresolved = resolver.group_grants(scope, label, mode)
        access.unresolved_roles.extend(unresolved)
        for grant in granting:
            members = group_members.get(grant.principal_id)
            if members is None:
                access.via_groups.append(grant)
            elif principal_id in members:
                access.direct.append(grant)
    return access
