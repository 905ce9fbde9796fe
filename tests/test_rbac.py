"""RBAC semantics: wildcard matching, notActions, the two registry modes, role-definition id forms."""

import pytest

from auditors.arm import role_definition_guid
from auditors.model import Permission, RoleDefinition
from auditors.rbac import ABAC_MODE, BUILTIN_ROLES, LEGACY_MODE, grants, matches


def role(actions=(), not_actions=(), data_actions=(), not_data_actions=(), *blocks) -> RoleDefinition:
    permissions = [Permission(tuple(actions), tuple(not_actions), tuple(data_actions), tuple(not_data_actions))]
    permissions += list(blocks)
    return RoleDefinition("00000000-0000-0000-0000-000000000001", "custom", "CustomRole", permissions)


@pytest.mark.parametrize(("pattern", "permission", "expected"), [
    ("*", "Microsoft.ContainerRegistry/registries/pull/read", True),
    ("*/read", "Microsoft.ContainerRegistry/registries/pull/read", True),
    ("Microsoft.ContainerRegistry/*", "Microsoft.ContainerRegistry/registries/pull/read", True),
    ("Microsoft.ContainerRegistry/*/read", "Microsoft.ContainerRegistry/registries/pull/read", True),
    ("microsoft.containerregistry/registries/PULL/read", "Microsoft.ContainerRegistry/registries/pull/read", True),
    ("Microsoft.ContainerRegistry/registries/push/write", "Microsoft.ContainerRegistry/registries/pull/read", False),
    ("Microsoft.Storage/*", "Microsoft.ContainerRegistry/registries/pull/read", False),
    ("*/write", "Microsoft.ContainerRegistry/registries/pull/read", False),
    ("Microsoft.ContainerRegistry/registries/pull", "Microsoft.ContainerRegistry/registries/pull/read", False),
])
def test_wildcard_matching(pattern, permission, expected):
    assert matches(pattern, permission) is expected


def test_not_actions_subtract_within_the_role():
    assert grants(role(["Microsoft.ContainerRegistry/*"]), LEGACY_MODE)
    assert not grants(role(["Microsoft.ContainerRegistry/*"], ["Microsoft.ContainerRegistry/registries/pull/*"]),
                      LEGACY_MODE)


def test_not_actions_of_one_block_do_not_cancel_another_block():
    granting = Permission(("*/read",), (), (), ())
    role_with_two_blocks = role(["Microsoft.ContainerRegistry/*"], ["*/read"], (), (), granting)
    assert grants(role_with_two_blocks, LEGACY_MODE)


@pytest.mark.parametrize(("name", "legacy", "abac"), [
    ("AcrPull", True, False),
    ("AcrPush", True, False),
    ("Owner", True, False),
    ("Contributor", True, False),
    ("Reader", True, False),
    ("AcrDelete", False, False),
    ("Container Registry Repository Reader", False, True),
    ("Container Registry Repository Writer", False, True),
    ("Container Registry Repository Contributor", False, True),
])
def test_builtin_roles_in_both_modes(name, legacy, abac):
    definition = next(r for r in BUILTIN_ROLES.values() if r.name == name)
    assert grants(definition, LEGACY_MODE) is legacy
    assert grants(definition, ABAC_MODE) is abac


def test_abac_mode_needs_the_repository_data_action():
    assert grants(role(data_actions=["Microsoft.ContainerRegistry/registries/repositories/*"]), ABAC_MODE)
    assert not grants(role(data_actions=["Microsoft.ContainerRegistry/registries/repositories/metadata/read"]),
                      ABAC_MODE)
    assert not grants(role(data_actions=["Microsoft.ContainerRegistry/registries/repositories/*"],
                           not_data_actions=["Microsoft.ContainerRegistry/registries/repositories/content/*"]),
                      ABAC_MODE)


@pytest.mark.parametrize("role_id", [
    "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/providers/Microsoft.Authorization/roleDefinitions/"
    "7F951DDA-4ED3-4680-A7CA-43FE172D538D",
    "/providers/Microsoft.Authorization/RoleDefinitions/7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "7f951dda-4ed3-4680-a7ca-43fe172d538d",
])
def test_role_definition_guid_join_in_every_id_form(role_id):
    assert role_definition_guid(role_id) == "7f951dda-4ed3-4680-a7ca-43fe172d538d"


def test_role_definition_guid_rejects_garbage():
    assert role_definition_guid("/providers/Microsoft.Authorization/roleDefinitions/not-a-guid") == ""
    assert role_definition_guid(None) == ""


ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
DOUBLED = f"/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL}/roleDefinitions/{READER}"


@pytest.mark.parametrize(("role_id", "guid"), [
    (DOUBLED, READER),  # an id names what its last segment names
    (DOUBLED + "/", READER),
    (f"/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL}/extra", ""),
])
def test_role_definition_guid_is_the_ids_last_segment(role_id, guid):
    assert role_definition_guid(role_id) == guid


def test_a_role_assignment_reads_the_same_whatever_rows_came_before_it():
    """The loader caches GUIDs by an id's last 36 characters; what it reads must not depend on that cache
    (a parallel load's worker has seen other rows than one process)."""
    from auditors.model import Inventory

    def assignment(number: int, role_id: str) -> dict:
        return {"id": f"/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/a{number}",
                "type": "microsoft.authorization/roleassignments",
                "properties": {"scope": "/subscriptions/s", "principalId": f"p{number}",
                               "principalType": "ServicePrincipal", "roleDefinitionId": role_id}}

    plain = assignment(1, f"/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/{READER}")
    doubled = assignment(2, DOUBLED)
    read = [{a.id: a.role_guid for a in Inventory.from_rows(rows)._assignments}
            for rows in ([plain, doubled], [doubled, plain])]
    assert read[0] == read[1]
