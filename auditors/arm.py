"""ARM identifiers, locations and case-insensitive access to sparse Resource Graph rows."""

from __future__ import annotations

import re
from typing import Any

ROOT_SCOPE = "/"
PUBLIC_ARM_ENDPOINT = "https://management.azure.com"
MG_PREFIX = "/providers/microsoft.management/managementgroups/"
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_ROLE_DEF_GUID = re.compile(r"/roledefinitions/([0-9a-f-]{36})/?\s*$", re.I)  # the id's last segment
_LOCATION_NOISE = re.compile(r"[\s_\-]+")


def norm_id(resource_id: Any) -> str:
    """Canonical key of an ARM id: lower-case, no trailing slash. ARM ids are case-insensitive."""
    if not isinstance(resource_id, str):
        return ""
    text = resource_id.strip().lower()
    if len(text) > 1:
        text = text.rstrip("/")
    return text


def norm_location(location: Any) -> str:
    """`East US`, `east-us` and `eastus` are the same region."""
    if not isinstance(location, str):
        return ""
    return _LOCATION_NOISE.sub("", location).lower()


def dig(obj: Any, *path: str, default: Any = None) -> Any:
    """Follow `path` through nested dicts, matching keys case-insensitively (PSRule exports are PascalCase)."""
    current = obj
    for key in path:
        if not isinstance(current, dict):
            return default
        if key in current:
            current = current[key]
            continue
        lowered = key.lower()
        for candidate, value in current.items():
            if isinstance(candidate, str) and candidate.lower() == lowered:
                current = value
                break
        else:
            return default
    return default if current is None else current


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def id_segment(resource_id: str, name: str) -> str:
    """Value after segment `name` (`resourcegroups`, `subscriptions`, ...) in an id, or ''."""
    parts = norm_id(resource_id).split("/")
    try:
        return parts[parts.index(name.lower()) + 1]
    except (ValueError, IndexError):
        return ""


def subscription_of(resource_id: str) -> str:
    return id_segment(resource_id, "subscriptions")


def resource_group_id(resource_id: str) -> str:
    """`/subscriptions/s/resourcegroups/g` for any id below a resource group, else ''."""
    sub = subscription_of(resource_id)
    group = id_segment(resource_id, "resourcegroups")
    return f"/subscriptions/{sub}/resourcegroups/{group}" if sub and group else ""


def parent_id(resource_id: str, levels: int = 2) -> str:
    """Strip `levels` trailing segments: a subnet id's parent VNet is two levels up."""
    parts = norm_id(resource_id).split("/")
    return "/".join(parts[:-levels]) if len(parts) > levels else ""


def last_segment(resource_id: str) -> str:
    return norm_id(resource_id).rsplit("/", 1)[-1]


def management_group_scope(name: str) -> str:
    return MG_PREFIX + name.lower()


def role_definition_guid(role_definition_id: Any) -> str:
    """GUID of a role definition in either id form (`/subscriptions/s/providers/...` or `/providers/...`): the
    id's last segment, as the loader's cache of GUIDs by an id's last 36 characters reads it too."""
    if not isinstance(role_definition_id, str):
        return ""
    match = _ROLE_DEF_GUID.search(role_definition_id)
    if match:
        return match.group(1).lower()
    bare = role_definition_id.strip()
    return bare.lower() if _GUID.fullmatch(bare) else ""


def is_guid(value: Any) -> bool:
    return isinstance(value, str) and bool(_GUID.fullmatch(value.strip()))


def type_from_id(resource_id: str) -> str:
    """Resource type an ARM id implies (`microsoft.containerregistry/registries/replications`), or ''."""
    parts = norm_id(resource_id).split("/")
    if "providers" not in parts:
        return ""
    start = len(parts) - 1 - parts[::-1].index("providers")
    tail = parts[start + 1:]
    if len(tail) < 3:
        return ""
    return "/".join([tail[0], *tail[1::2]])


def management_group_chain(properties: Any) -> list[str] | None:
    """Management-group names above a subscription, nearest parent first, from a subscription row's
    `properties.managementGroupAncestorsChain` (lower-cased); None when the row does not carry the chain."""
    chain = properties.get("managementGroupAncestorsChain") if isinstance(properties, dict) else None
    if not isinstance(chain, list):
        return None
    names = [m.get("name") for m in chain if isinstance(m, dict)]
    return [n.lower() for n in names if isinstance(n, str) and n]
