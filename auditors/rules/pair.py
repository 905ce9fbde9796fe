"""Pair-scope rules: can this cluster pull from this registry."""

from __future__ import annotations

from auditors import network, rbac
from auditors.arm import norm_id
from auditors.model import (
    T_DNS_LINK,
    T_GRAPH_GROUP,
    T_NAT_GATEWAY,
    T_PRIVATE_ENDPOINT,
    T_PUBLIC_IP,
    T_REPLICATION,
    T_ROLE_ASSIGNMENT,
    T_ROLE_DEFINITION,
    T_SUBSCRIPTION,
    T_VNET,
)
from auditors.rules import Result, RuleMeta, Scope, Severity, Status, failed, not_applicable, passed, rule, unknown
from auditors.rules.context import PairContext

DOCS_ACR = "https://learn.microsoft.com/azure/container-registry"
DOCS_AKS = "https://learn.microsoft.com/azure/aks"
MAX_LISTED = 20
REPOSITORY_READER = "Container Registry Repository Reader"


SCOPES_SEARCHED = "the registry, its resource group, subscription, management groups or root"


def _where(grant: rbac.Grant) -> str:
    return f"the {grant.scope_label} scope {grant.scope}"


def _grant_list(grants: list[rbac.Grant]) -> list[dict]:
    return [g.evidence() for g in grants[:MAX_LISTED]]


def _group_reason(ctx: PairContext, groups: list[str]) -> str:
    permitted = ctx.inventory.permissions.get("GroupMember.Read.All")
    unread = ctx.inventory.missing([T_GRAPH_GROUP], None)
    if permitted is False:
        why = "the auditor's identity lacks the Microsoft Graph permission GroupMember.Read.All, which decides them"
    elif unread:
        why = f"Microsoft Graph could not be read ({unread[0].reason})"
    elif "GroupMember.Read.All" not in ctx.inventory.permissions:
        why = "Microsoft Graph was not queried for their members (a live run with GroupMember.Read.All decides them)"
    else:
        why = "Microsoft Graph could not resolve their members"
    return (f"pull is granted to group(s) {', '.join(groups[:5])}; {why}, or declare them under `groups:` in the "
            "pairs file")


DENY_REMEDIATION = (
    "# A role assignment cannot lift a deny assignment: change what created it. Show it:\n"
    "az rest --method get --url \"https://management.azure.com{deny_id}?api-version=2022-04-01\"\n"
    "# A deployment stack's deny settings: redeploy the stack with the pull identity excluded:\n"
    "#   az stack sub create ... --deny-settings-excluded-principals {principal_id}\n"
    "# A managed application or Blueprint: ask its publisher or owner to exclude {principal_id}."
)


def _conflicting_assignments(ctx: PairContext) -> list[str]:
    """Ids of the pull identity's assignments over the registry whose rows disagree."""
    inventory = ctx.inventory
    held = inventory.assignments_of(ctx.cluster_ctx.principal.object_id)  # indexing finds the conflicts
    if not inventory.conflicting:
        return []
    over = {scope for scope, _ in inventory.ancestor_scopes(ctx.registry.id)[0]}
    return [norm_id(a.id) for a in held if a.scope in over and norm_id(a.id) in inventory.conflicting]


def _mode_verdict(ctx: PairContext, mode: str) -> Result:
    principal = ctx.cluster_ctx.principal
    access = ctx.pull_access(mode)
    evidence = {"roleAssignmentMode": mode, "grants": _grant_list(access.direct)}
    if access.deny_unchecked:
        evidence["unchecked"] = [access.deny_unchecked]
    if access.denials:
        evidence["denyAssignments"] = [d.evidence() for d in access.denials[:MAX_LISTED]]
    if access.denied:
        deny = access.denied[0]
        creator = deny.deny.description or ("a system-protected resource (a managed application, a deployment "
                                             "stack or a Blueprint)" if deny.deny.system_protected else
                                             deny.deny.created_by or "its creator")
        held = f" It overrides {len(access.direct)} granting assignment(s)." if access.direct else ""
        return failed(f"Deny assignment {deny.deny.name or deny.deny.id} at {deny.scope_label} scope {deny.deny.scope} "
                      f"denies pull to the {principal.kind}: {deny.why} ({creator}).{held}",
                      fix={"remediation": DENY_REMEDIATION, "deny_id": deny.deny.id}, **evidence)
    reasons = []
    if access.denials:  # a deny that may apply: membership decides
        reasons.append("deny assignment(s) " + ", ".join(d.deny.name or d.deny.id for d in access.denials[:3])
                       + " may apply: " + access.denials[0].why)
    if access.granted and not reasons:
        first = next((g for g in access.direct if not g.condition), access.direct[0])
        if access.unconditional:
            return passed(f"The {principal.kind} holds {first.role} at {_where(first)} "
                          f"({len(access.direct)} granting assignment(s)).", **evidence)
        return passed(f"The {principal.kind} holds {first.role} at {_where(first)}, limited by an ABAC "
                      f"condition to some repositories: {first.condition}", **evidence)
    if access.wildcard and not access.granted:
        roles = sorted({g.role for g in access.wildcard})
        wanted = rbac.REPOSITORY_READ_DATA_ACTION if mode == rbac.ABAC_MODE else rbac.PULL_ACTION
        reasons.append(f"custom role(s) {', '.join(roles[:3])} grant pull only through a wildcard: "
                       f"{rbac.WILDCARD_RULE}. List {wanted} explicitly in the role")
        evidence["wildcardGrants"] = _grant_list(access.wildcard)
    if access.via_groups and not access.granted:
        groups = sorted({g.principal_id for g in access.via_groups})
        reasons.append(_group_reason(ctx, groups))
        evidence["groupGrants"] = _grant_list(access.via_groups)
    if access.unresolved_roles and not access.granted:
        roles = sorted(set(access.unresolved_roles))
        reasons.append(f"role definition(s) {', '.join(roles[:5])} assigned to it are not in the snapshot")
        evidence["unresolvedRoles"] = roles[:MAX_LISTED]
    if not ctx.inventory.collected(T_ROLE_ASSIGNMENT):
        reasons.append("the snapshot holds no role assignment rows")
    if not access.granted:
        reasons.extend(access.gaps)
        if access.gaps:
            evidence["gaps"] = access.gaps
    if reasons:
        lead = "A role grants pull" if access.granted else f"No role granting pull to the {principal.kind} was found"
        return unknown(f"{lead}, but " + "; ".join(reasons) + ".", **evidence)
    message = f"The {principal.kind} holds no role granting pull at {SCOPES_SEARCHED}."
    role = "AcrPull"
    if mode == rbac.ABAC_MODE:
        role = REPOSITORY_READER
        legacy = ctx.pull_access(rbac.LEGACY_MODE)
        message += (" The registry uses ABAC repository permissions, where AcrPull, AcrPush, Owner, Contributor and "
                    "Reader grant no image access")
        if legacy.granted:
            held = ", ".join(sorted({f"{g.role} at the {g.scope_label} scope" for g in legacy.direct})[:5])
            message += f"; it holds {held}, which this mode ignores"
            evidence["ignoredInAbacMode"] = _grant_list(legacy.direct)
        message += "."
    return failed(message, fix={"role": role}, **evidence)


@rule(RuleMeta(
    id="AKS-ACR-001",
    title="Cluster pull identity has pull permission on the registry",
    severity=Severity.HIGH,
    scope=Scope.PAIR,
    category="Identity",
    seed_cause=1,
    needs=(T_ROLE_ASSIGNMENT, T_ROLE_DEFINITION, T_SUBSCRIPTION),
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN}),
    synopsis="The cluster's kubelet identity (or service principal) holds a role that grants image pull on the "
             "registry, directly, inherited or through a group, and no deny assignment takes it away.",
    remediation=(
        "az role assignment create --assignee-object-id {principal_id} --assignee-principal-type ServicePrincipal "
        "--role \"{role}\" --scope {registry_id}\n"
        "# For a managed-identity cluster on a registry in legacy (non-ABAC) mode, AKS can do it for you:\n"
        "az aks update --resource-group {cluster_rg} --name {cluster_name} --attach-acr {registry_id}"
    ),
    controls=("MCSB:PA-7", "CIS-AKS:5.1.3", "NIST-800-53:AC-6", "NIST-800-53:AC-3"),
    links=(f"{DOCS_AKS}/cluster-container-registry-integration",
           f"{DOCS_ACR}/container-registry-rbac-abac-repository-permissions",
           f"{DOCS_ACR}/container-registry-roles"),
))
def identity_can_pull(ctx: PairContext) -> Result:
    registry, principal = ctx.registry, ctx.cluster_ctx.principal
    if registry.anonymous_pull_enabled and registry.sku.lower() != "basic":
        return passed("Anonymous pull is enabled on the registry, so no role is needed (see AKS-ACR-009).",
                      anonymousPullEnabled=True)
    if not principal.object_id:
        return unknown(f"The pull identity cannot be resolved: {principal.reason}.", principalKind=principal.kind)
    conflicting = _conflicting_assignments(ctx)
    if conflicting:
        return unknown(f"Role assignment {conflicting[0]} appears in several rows that disagree (role, scope or "
                       "condition), so whether the pull identity holds pull is unknown; collect again.",
                       conflictingRows=conflicting[:MAX_LISTED])
    declared_mode = next((m for m in rbac.MODES if m.lower() == registry.role_assignment_mode.lower()), "")
    if declared_mode:
        return _mode_verdict(ctx, declared_mode)
    if registry.role_assignment_mode:
        return unknown(f"The registry's roleAssignmentMode {registry.role_assignment_mode!r} is not one this "
                       f"auditor knows ({', '.join(rbac.MODES)}), so which roles grant pull is unknown.",
                       roleAssignmentMode=registry.role_assignment_mode)
    result = _mode_verdict(ctx, rbac.LEGACY_MODE)
    result.evidence["assumed"] = f"roleAssignmentMode absent from the row; the service default {rbac.LEGACY_MODE} " \
                                 "was assumed"
    return result


@rule(RuleMeta(
    id="AKS-ACR-003",
    title="A network route from the cluster's nodes to the registry exists",
    severity=Severity.HIGH,
    scope=Scope.PAIR,
    category="Network",
    seed_cause=3,
    needs_anywhere=(T_VNET, T_PRIVATE_ENDPOINT, T_PUBLIC_IP, T_NAT_GATEWAY),
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN}),
    synopsis="The registry accepts the cluster's traffic: through its public endpoint (firewall allows the "
             "cluster's egress IPs) or through an approved private endpoint in the node VNet or a peered VNet.",
    remediation=(
        "# Either allow the cluster's egress IP through the registry firewall:\n"
        "az acr network-rule add --name {registry_name} --resource-group {registry_rg} --ip-address {egress_ip}\n"
        "# or give the nodes a private path: a private endpoint in (or peered with) the node VNet\n"
        "az network private-endpoint create --resource-group {cluster_rg} --name pe-{registry_name} "
        "--vnet-name <node-vnet> --subnet <subnet> --private-connection-resource-id {registry_id} "
        "--group-ids registry --connection-name {registry_name}\n"
        "# and approve a pending connection:\n"
        "az acr private-endpoint-connection approve --registry-name {registry_name} --name <connection-name>"
    ),
    controls=("MCSB:NS-2", "NIST-800-53:AC-4", "NIST-800-53:SC-7", "PSRule:Azure.ACR.Firewall"),
    links=(f"{DOCS_ACR}/container-registry-access-selected-networks", f"{DOCS_ACR}/container-registry-private-link",
           f"{DOCS_AKS}/egress-outboundtype"),
))
def network_route_exists(ctx: PairContext) -> Result:
    registry = ctx.registry
    egress = ctx.cluster_ctx.egress
    public, private = ctx.public_route, ctx.private_route
    vnets, vnet_gap = ctx.cluster_ctx.vnets
    evidence = {
        "sku": registry.sku or None, "publicNetworkAccess": registry.public_network_access or None,
        "defaultAction": registry.default_action or None, "ipRules": registry.ip_rules[:MAX_LISTED],
        "egressIps": egress.ips, "egressSource": egress.source, "nodeVnets": vnets,
    }
    if private.paths:
        evidence["privatePaths"] = [vars(p) for p in private.paths[:MAX_LISTED]]
    if private.blockers:
        evidence["privateBlockers"] = private.blockers[:MAX_LISTED]
    if public.state == network.OPEN:
        return passed(f"Public route: {public.reason}.", route="public", **evidence)
    if private.paths:
        path = private.paths[0]
        return passed(f"Private route: approved private endpoint {path.endpoint_id} reached via {path.via} "
                      f"from node VNet {path.node_vnet}.", route="private", publicRoute=public.reason, **evidence)
    unknowns = [public.reason] if public.state == network.UNKNOWN else []
    unknowns += private.unknowns
    if vnet_gap and private.endpoints_considered:
        unknowns.append(vnet_gap)
    if unknowns:  # the public route's state is in the evidence when the message does not quote it
        quoted = {} if public.state == network.UNKNOWN else {"publicRoute": public.reason}
        return unknown("No route could be confirmed: " + "; ".join(unknowns) + ".", **quoted, **evidence)
    private_text = "; ".join(private.blockers) if private.blockers else "the registry has no private endpoint"
    return failed(f"No network route: {public.reason}, and {private_text}.",
                  fix={"egress_ip": public.outside_rules[0] if public.outside_rules else "<egress-ip>"}, **evidence)


@rule(RuleMeta(
    id="AKS-ACR-004",
    title="Private DNS resolves the registry to its private endpoint",
    severity=Severity.HIGH,
    scope=Scope.PAIR,
    category="DNS",
    seed_cause=3,
    needs_anywhere=(T_VNET, T_DNS_LINK),
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN, Status.NOT_APPLICABLE}),
    synopsis="When a private endpoint is the route, the privatelink.azurecr.io zone is linked to the node VNet so "
             "nodes resolve the registry to the private address.",
    remediation=(
        "az network private-dns link vnet create --resource-group {dns_zone_rg} --zone-name privatelink.azurecr.io "
        "--name link-{node_vnet_name} --virtual-network {node_vnet_id} --registration-enabled false"
    ),
    controls=("MCSB:NS-10", "MCSB:NS-2"),
    links=(f"{DOCS_ACR}/container-registry-private-link#configure-dns-settings-for-the-private-endpoint",
           "https://learn.microsoft.com/azure/private-link/private-endpoint-dns"),
))
def private_dns_resolves(ctx: PairContext) -> Result:
    private = ctx.private_route
    if not private.paths:
        return not_applicable("No private endpoint route from the node VNet (see AKS-ACR-003).")
    if ctx.public_route.state == network.OPEN:
        return not_applicable("The public route works, so the pull does not depend on private DNS.")
    verdicts = [network.private_dns(vnet, ctx.inventory) for vnet in sorted({p.node_vnet for p in private.paths})]
    evidence = {"dns": [vars(v) for v in verdicts], "zones": ctx.inventory.acr_dns_zones[:MAX_LISTED]}
    missing = [v for v in verdicts if v.state == "not linked"]
    if missing:
        vnet = missing[0].vnet
        zone_rg = ctx.inventory.acr_dns_zones[0].split("/")[4] if ctx.inventory.acr_dns_zones else "<dns-zone-rg>"
        fix = {"node_vnet_id": vnet, "node_vnet_name": vnet.rsplit("/", 1)[-1], "dns_zone_rg": zone_rg}
        public = ctx.public_route
        then = ("which refuses it" if public.state == network.BLOCKED
                else f"and whether that admits it is unknown ({public.reason})")
        return failed(" ".join(v.reason + "." for v in missing) + f" The pull then goes to the registry's public "
                      f"endpoint, {then}.", fix=fix, **evidence)
    unknowns = [v for v in verdicts if v.state == network.UNKNOWN]
    if unknowns:
        return unknown(" ".join(v.reason + "." for v in unknowns), **evidence)
    return passed(" ".join(v.reason + "." for v in verdicts), **evidence)


@rule(RuleMeta(
    id="AKS-ACR-008",
    title="Registry or a replica is in the cluster's region",
    severity=Severity.LOW,
    scope=Scope.PAIR,
    category="Region",
    seed_cause=6,
    needs=(T_REPLICATION,),
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN}),
    synopsis="The registry, or one of its geo-replications, is in the cluster's region, so pulls stay in-region.",
    remediation=(
        "# Premium registries: add a replica in the cluster's region\n"
        "az acr replication create --registry {registry_name} --resource-group {registry_rg} "
        "--location {cluster_location}\n"
        "# (Basic/Standard first: az acr update --name {registry_name} --sku Premium)"
    ),
    links=(f"{DOCS_ACR}/container-registry-geo-replication",),
))
def same_region(ctx: PairContext) -> Result:
    cluster, registry = ctx.cluster, ctx.registry
    locations = [registry.location, *registry.replica_locations] if registry.location else []
    evidence = {"clusterLocation": cluster.location or None, "registryLocations": locations}
    if not cluster.location or not registry.location:
        return unknown("The cluster or registry row has no location.", **evidence)
    if cluster.location in locations:
        where = "the registry" if cluster.location == registry.location else "a replica of the registry"
        return passed(f"{where.capitalize()} is in {cluster.location}, the cluster's region.", **evidence)
    if (registry.is_premium or not registry.sku) and not ctx.inventory.collected(T_REPLICATION):
        return unknown(f"The registry is in {registry.location}, the cluster in {cluster.location}, and the snapshot "
                       "holds no replication rows to tell whether a replica serves that region.", **evidence)
    return failed(f"The registry is in {', '.join(locations)} but the cluster is in {cluster.location}: every pull "
                  "crosses regions (slower pulls, egress cost, and a dependency on another region).",
                  fix={"cluster_location": cluster.location}, **evidence)

