"""What to audit: the whole tenant, management groups or subscriptions. One parser for the CLI, the
settings and the collectors."""

from __future__ import annotations

import re
from dataclasses import dataclass

from auditors.arm import is_guid

_MANAGEMENT_GROUP_NAME = re.compile(r"[A-Za-z0-9_().-]{1,90}")


class ScopeError(ValueError):
    """A scope value that cannot be used; the message names it."""


@dataclass(frozen=True)
class CollectionScope:
    management_groups: tuple[str, ...] = ()
    subscriptions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, values: list[str] | tuple[str, ...] | None) -> CollectionScope:
        """`tenant`, `mg:NAME` (Azure's management-group id rules) or `sub:GUID`; raises ScopeError naming the
        first value that is none of these."""
        groups, subscriptions = [], []
        for value in values or []:
            kind, _, name = value.partition(":")
            name = name.strip()
            kind = kind.strip().lower()
            if kind in ("mg", "managementgroup") and _MANAGEMENT_GROUP_NAME.fullmatch(name):
                groups.append(name)
            elif kind in ("sub", "subscription") and is_guid(name):
                subscriptions.append(name.lower())
            elif kind in ("sub", "subscription") and name:
                raise ScopeError(f"scope {value!r}: a subscription is given by its id, a GUID")
            elif kind == "tenant" and not name:
                continue
            else:
                raise ScopeError(f"scope {value!r}: use tenant, mg:NAME or sub:SUBSCRIPTION-ID")
        if groups and subscriptions:
            raise ScopeError("scope: give management groups or subscriptions, not both (run twice instead)")
        return cls(tuple(dict.fromkeys(groups)), tuple(dict.fromkeys(subscriptions)))

    @property
    def kind(self) -> str:
        return "managementGroups" if self.management_groups else "subscriptions" if self.subscriptions else "tenant"

    def describe(self) -> str:
        if self.management_groups:
            return "management groups " + ", ".join(self.management_groups)
        if self.subscriptions:
            return f"{len(self.subscriptions)} subscription(s)"
        return "tenant"
