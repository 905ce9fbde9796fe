"""Registry-scope posture rules."""

from __future__ import annotations

from auditors.rules import Result, RuleMeta, Scope, Severity, Status, failed, not_applicable, passed, rule, unknown
from auditors.rules.context import RegistryContext

DOCS = "https://learn.microsoft.com/azure/container-registry"


def _default_note(value: bool | None, prop: str) -> dict:
    """Evidence for a boolean that may be absent: ARM omits it when it holds the service default (false)."""
    if value is None:
        return {prop: None, "assumed": f"{prop} absent from the row; the service default is false"}
    return {prop: value}


def _without_properties(ctx: RegistryContext) -> Result | None:
    """Defaults stand in for absent properties only when the row has properties at all."""
    if ctx.registry.has_properties:
        return None
    return unknown("The registry row carries no properties, so its settings cannot be read.")


@rule(RuleMeta(
    id="AKS-ACR-007",
    title="Registry admin user is disabled",
    severity=Severity.MEDIUM,
    scope=Scope.REGISTRY,
    category="Posture",
    seed_cause=5,
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN}),
    synopsis="The registry's shared admin account is disabled; clusters pull with Entra identities instead.",
    remediation=(
        "# Find what still uses the admin credentials (imagePullSecrets, CI), move it to AcrPull, then:\n"
        "az acr update --name {registry_name} --resource-group {registry_rg} --admin-enabled false"
    ),
    controls=("MCSB:IM-1", "CIS-AKS:5.1.2", "NIST-800-53:AC-2", "NIST-800-53:IA-2", "PSRule:Azure.ACR.AdminUser"),
    links=(f"{DOCS}/container-registry-authentication#admin-account",),
))
def admin_user_disabled(ctx: RegistryContext) -> Result:
    if sparse := _without_properties(ctx):
        return sparse
    value = ctx.registry.admin_user_enabled
    evidence = _default_note(value, "adminUserEnabled")
    if value:
        return failed("The admin user is enabled: a shared username/password with push and pull rights that is not "
                      "tied to any identity and cannot be scoped.", **evidence)
    return passed("The admin user is disabled.", **evidence)


@rule(RuleMeta(
    id="AKS-ACR-009",
    title="Registry anonymous pull is disabled",
    severity=Severity.HIGH,
    scope=Scope.REGISTRY,
    category="Posture",
    seed_cause=None,
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN, Status.NOT_APPLICABLE}),
    synopsis="Anonymous (unauthenticated) pull is disabled, so only authorised identities can read images.",
    remediation="az acr update --name {registry_name} --resource-group {registry_rg} --anonymous-pull-enabled false",
    controls=("MCSB:IM-1", "NIST-800-53:AC-3", "NIST-800-53:IA-2", "PSRule:Azure.ACR.AnonymousAccess"),
    links=(f"{DOCS}/anonymous-pull-access",),
))
def anonymous_pull_disabled(ctx: RegistryContext) -> Result:
    if sparse := _without_properties(ctx):
        return sparse
    registry = ctx.registry
    value = registry.anonymous_pull_enabled
    evidence = {**_default_note(value, "anonymousPullEnabled"), "sku": registry.sku or None}
    if registry.sku.lower() == "basic":
        return not_applicable("Anonymous pull needs the Standard or Premium SKU; this registry is Basic.", **evidence)
    if value:
        return failed("Anonymous pull is enabled: anyone on a network that reaches the registry can pull every "
                      "image without signing in.", **evidence)
    return passed("Anonymous pull is disabled.", **evidence)


@rule(RuleMeta(
    id="AKS-ACR-011",
    title="Registry is not open to every network",
    severity=Severity.MEDIUM,
    scope=Scope.REGISTRY,
    category="Network",
    seed_cause=None,
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN, Status.NOT_APPLICABLE}),
    synopsis="A Premium registry restricts network access: public access disabled or the firewall denies by default.",
    remediation=(
        "# Allow only known networks (add each cluster's egress IP or range first):\n"
        "az acr network-rule add --name {registry_name} --resource-group {registry_rg} "
        "--ip-address <egress-ip-or-cidr>\n"
        "az acr update --name {registry_name} --resource-group {registry_rg} --default-action Deny\n"
        "# Or serve clusters over private endpoints only:\n"
        "az acr update --name {registry_name} --resource-group {registry_rg} --public-network-enabled false"
    ),
    controls=("MCSB:NS-2", "NIST-800-53:AC-4", "NIST-800-53:SC-7", "PSRule:Azure.ACR.Firewall"),
    links=(f"{DOCS}/container-registry-access-selected-networks", f"{DOCS}/container-registry-private-link"),
))
def not_open_to_every_network(ctx: RegistryContext) -> Result:
    if sparse := _without_properties(ctx):
        return sparse
    registry = ctx.registry
    evidence = {"sku": registry.sku or None, "publicNetworkAccess": registry.public_network_access or None,
                "defaultAction": registry.default_action or None, "ipRules": registry.ip_rules}
    if not registry.sku:
        return unknown("The registry row has no SKU, and network rules apply only to Premium.", **evidence)
    if not registry.is_premium:
        return not_applicable(f"Network rules need the Premium SKU; a {registry.sku} registry always accepts "
                              "every network.", **evidence)
    if (registry.public_network_access or "Enabled").lower() == "disabled":
        return passed("Public network access is disabled.", **evidence)
    everything = [rule for rule in registry.ip_rules if rule.strip().endswith("/0")]
    if everything and (registry.default_action or "Allow").lower() == "deny":
        return failed(f"The firewall denies by default but allows {', '.join(everything)}, which is every address.",
                      **evidence)
    if (registry.default_action or "Allow").lower() == "deny":
        return passed(f"The firewall denies by default and allows {len(registry.ip_rules)} IP rule(s).", **evidence)
    return failed("Public network access is enabled with default action Allow: the registry accepts connections "
                  "from every network.", **evidence)
