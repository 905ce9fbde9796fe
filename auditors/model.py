"""The inventory: what Resource Graph knows about a tenant, indexed for batch evaluation.

Built in one pass over rows from `resources`, `resourcecontainers` and `authorizationresources`.
Keys are normalised ARM ids (lower-case). Rows that are sparse or of unexpected shape are kept
with whatever they carry, or skipped with a note; they never stop the run.
"""

from __future__ import annotations

import gc
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from auditors.arm import (
    MG_PREFIX,
    ROOT_SCOPE,
    as_list,
    dig,
    last_segment,
    management_group_chain,
    management_group_scope,
    norm_id,
    norm_location,
    parent_id,
    resource_group_id,
    role_definition_guid,
    subscription_of,
)

T_CLUSTER = "microsoft.containerservice/managedclusters"
T_REGISTRY = "microsoft.containerregistry/registries"
T_REPLICATION = "microsoft.containerregistry/registries/replications"
T_IDENTITY = "microsoft.managedidentity/userassignedidentities"
T_ROLE_ASSIGNMENT = "microsoft.authorization/roleassignments"
T_ROLE_DEFINITION = "microsoft.authorization/roledefinitions"
T_SUBSCRIPTION = "microsoft.resources/subscriptions"
T_VNET = "microsoft.network/virtualnetworks"
T_PRIVATE_ENDPOINT = "microsoft.network/privateendpoints"
T_DNS_ZONE = "microsoft.network/privatednszones"
T_DNS_LINK = "microsoft.network/privatednszones/virtualnetworklinks"
T_PUBLIC_IP = "microsoft.network/publicipaddresses"
T_NAT_GATEWAY = "microsoft.network/natgateways"

ACR_PRIVATE_DNS_ZONE = "privatelink.azurecr.io"
IDENTITY_MANAGED, IDENTITY_SERVICE_PRINCIPAL = "managed", "service-principal"
IDENTITY_NONE, IDENTITY_UNKNOWN = "none", "unknown"


def _tags(row: dict) -> dict[str, str]:
    tags = row.get("tags")
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}


def _bool_or_none(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _text(value) -> str:
    return value if isinstance(value, str) else ""


@dataclass(slots=True)
class Resource:
    id: str
    name: str
    resource_group: str
    subscription_id: str
    location: str
    tags: dict[str, str]

    @property
    def key(self) -> str:
        return norm_id(self.id)

    @property
    def owner(self) -> str:
        for name, value in self.tags.items():
            if name.lower() == "owner":
                return value
        return ""


def _resource_fields(row: dict) -> dict:
    rid = row["id"]
    return {
        "id": rid,
        "name": _text(row.get("name")) or last_segment(rid),
        "resource_group": _text(row.get("resourceGroup")) or resource_group_id(rid).rsplit("/", 1)[-1],
        "subscription_id": (_text(row.get("subscriptionId")) or subscription_of(rid)).lower(),
        "location": norm_location(row.get("location")),
        "tags": _tags(row),
    }


@dataclass(slots=True)
class Cluster(Resource):
    has_properties: bool = False
    identity_type: str = ""
    service_principal_client_id: str = ""
    kubelet_object_id: str = ""
    kubelet_resource_id: str = ""
    node_resource_group: str = ""
    node_subnet_ids: list[str] = field(default_factory=list)
    outbound_type: str = ""
    load_balancer_ip_ids: list[str] = field(default_factory=list)
    managed_nat_ip_ids: list[str] = field(default_factory=list)

    @property
    def identity_kind(self) -> str:
        """`managed`, `service-principal`, `none` (explicitly identity-less) or `unknown` (row does not say)."""
        client_id = self.service_principal_client_id.lower()
        if client_id == "msi":
            return IDENTITY_MANAGED
        if client_id:
            return IDENTITY_SERVICE_PRINCIPAL
        kind = self.identity_type.lower()
        if kind in ("systemassigned", "userassigned", "systemassigned, userassigned"):
            return IDENTITY_MANAGED
        if kind == "none":
            return IDENTITY_NONE
        return IDENTITY_UNKNOWN

    @classmethod
    def from_row(cls, row: dict) -> Cluster:
        props = row.get("properties") if isinstance(row.get("properties"), dict) else {}
        network = dig(props, "networkProfile", default={})
        kubelet = dig(props, "identityProfile", "kubeletidentity", default={})
        return cls(
            **_resource_fields(row),
            has_properties=bool(props),
            identity_type=_text(dig(row, "identity", "type")),
            service_principal_client_id=_text(dig(props, "servicePrincipalProfile", "clientId")),
            kubelet_object_id=_text(dig(kubelet, "objectId")).lower(),
            kubelet_resource_id=_text(dig(kubelet, "resourceId")),
            node_resource_group=_text(dig(props, "nodeResourceGroup")),
            node_subnet_ids=[
                norm_id(dig(pool, "vnetSubnetID"))
                for pool in as_list(dig(props, "agentPoolProfiles"))
                if isinstance(dig(pool, "vnetSubnetID"), str)
            ],
            outbound_type=_text(dig(network, "outboundType")),
            load_balancer_ip_ids=[
                norm_id(dig(ip, "id")) for ip in as_list(dig(network, "loadBalancerProfile", "effectiveOutboundIPs"))
            ],
            managed_nat_ip_ids=[
                norm_id(dig(ip, "id")) for ip in as_list(dig(network, "natGatewayProfile", "effectiveOutboundIPs"))
            ],
        )


@dataclass(slots=True)
class PrivateEndpointConnection:
    private_endpoint_key: str
    status: str


@dataclass(slots=True)
class Registry(Resource):
    has_properties: bool = False
    sku: str = ""
    login_server: str = ""
    admin_user_enabled: bool | None = None
    anonymous_pull_enabled: bool | None = None
    public_network_access: str = ""
    default_action: str = ""
    ip_rules: list[str] = field(default_factory=list)
    connections: list[PrivateEndpointConnection] = field(default_factory=list)
    role_assignment_mode: str = ""
    replica_locations: list[str] = field(default_factory=list)

    @property
    def is_premium(self) -> bool:
        return self.sku.lower() == "premium"

    @classmethod
    def from_row(cls, row: dict) -> Registry:
        props = row.get("properties") if isinstance(row.get("properties"), dict) else {}
        return cls(
            **_resource_fields(row),
            has_properties=bool(props),
            sku=_text(dig(row, "sku", "name")) or _text(dig(row, "sku", "tier")),
            login_server=_text(dig(props, "loginServer")).lower(),
            admin_user_enabled=_bool_or_none(dig(props, "adminUserEnabled")),
            anonymous_pull_enabled=_bool_or_none(dig(props, "anonymousPullEnabled")),
            public_network_access=_text(dig(props, "publicNetworkAccess")),
            default_action=_text(dig(props, "networkRuleSet", "defaultAction")),
            ip_rules=[
                _text(dig(rule, "value"))
                for rule in as_list(dig(props, "networkRuleSet", "ipRules"))
                if _text(dig(rule, "action", default="Allow")).lower() == "allow" and _text(dig(rule, "value"))
            ],
            connections=[
                PrivateEndpointConnection(
                    norm_id(dig(conn, "properties", "privateEndpoint", "id")),
                    _text(dig(conn, "properties", "privateLinkServiceConnectionState", "status")),
                )
                for conn in as_list(dig(props, "privateEndpointConnections"))
                if dig(conn, "properties", "privateEndpoint", "id")
            ],
            role_assignment_mode=_text(dig(props, "roleAssignmentMode")),
        )


@dataclass(slots=True)
class RoleAssignment:
    id: str
    scope: str
    principal_id: str
    principal_type: str
    role_guid: str
    condition: str


@dataclass(slots=True)
class Permission:
    actions: tuple[str, ...]
    not_actions: tuple[str, ...]
    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...]


@dataclass(slots=True)
class RoleDefinition:
    guid: str
    name: str
    role_type: str
    permissions: list[Permission]
    source: str = "snapshot"


def _strings(value) -> tuple[str, ...]:
    return tuple(v for v in as_list(value) if isinstance(v, str))


def role_definition_from_row(row: dict) -> RoleDefinition | None:
    guid = role_definition_guid(row.get("id")) or role_definition_guid(row.get("name"))
    if not guid:
        return None
    props = row.get("properties") if isinstance(row.get("properties"), dict) else {}
    return RoleDefinition(
        guid=guid,
        name=_text(dig(props, "roleName")) or guid,
        role_type=_text(dig(props, "type")),
        permissions=[
            Permission(
                _strings(dig(p, "actions")), _strings(dig(p, "notActions")),
                _strings(dig(p, "dataActions")), _strings(dig(p, "notDataActions")),
            )
            for p in as_list(dig(props, "permissions"))
            if isinstance(p, dict)
        ],
    )


@dataclass(slots=True)
class Subnet:
    key: str
    nat_gateway_key: str


@dataclass(slots=True)
class Peering:
    remote_vnet_key: str
    state: str
    allow_access: bool


@dataclass(slots=True)
class VirtualNetwork:
    id: str
    dns_servers: list[str]
    subnets: dict[str, Subnet]
    peerings: list[Peering]


@dataclass(slots=True)
class PrivateEndpoint:
    id: str
    subnet_key: str
    targets: dict[str, str]  # registry key -> connection status


@dataclass(slots=True)
class DnsLink:
    id: str
    zone_name: str
    vnet_key: str
    state: str


@dataclass(slots=True)
class NatGateway:
    id: str
    public_ip_keys: list[str]
    has_prefixes: bool


@dataclass(frozen=True)
class Gap:
    """Data that could not be collected: rows of `types` for `subscriptions` (empty: any subscription,
    including management-group and root scope data)."""

    query: str
    types: tuple[str, ...]
    subscriptions: frozenset[str]
    reason: str

    def covers(self, row_type: str, subscriptions: set[str] | None) -> bool:
        """Whether rows of this type may be missing for these subscriptions (None: for any subscription)."""
        if row_type not in self.types:
            return False
        return subscriptions is None or not self.subscriptions or bool(self.subscriptions & subscriptions)

    def to_dict(self) -> dict:
        return {"query": self.query, "types": list(self.types), "subscriptions": sorted(self.subscriptions),
                "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict) -> Gap:
        return cls(str(data.get("query", "")), tuple(data.get("types") or ()),
                   frozenset(str(s).lower() for s in data.get("subscriptions") or ()), str(data.get("reason", "")))


@dataclass(slots=True)
class SubscriptionInfo:
    id: str
    name: str
    ancestors: list[str]  # management group names, nearest parent first
    has_ancestry: bool


class Inventory:
    """Everything the rules read, indexed by normalised id, principal and scope."""

    def __init__(self) -> None:
        self.clusters: dict[str, Cluster] = {}
        self.registries: dict[str, Registry] = {}
        self.identities: dict[str, str] = {}  # user-assigned identity key -> principal id
        self.role_definitions: dict[str, RoleDefinition] = {}
        self.assignments_by_principal: dict[str, list[RoleAssignment]] = defaultdict(list)
        self.group_assignments_by_scope: dict[str, list[RoleAssignment]] = defaultdict(list)
        self.subscriptions: dict[str, SubscriptionInfo] = {}
        self.vnets: dict[str, VirtualNetwork] = {}
        self.subnet_vnet: dict[str, str] = {}
        self.vnets_by_group: dict[str, list[str]] = defaultdict(list)
        self.private_endpoints: dict[str, PrivateEndpoint] = {}
        self.endpoints_by_registry: dict[str, list[str]] = defaultdict(list)
        self.dns_links_by_vnet: dict[str, list[DnsLink]] = defaultdict(list)
        self.acr_dns_zones: list[str] = []
        self.public_ips: dict[str, str] = {}
        self.nat_gateways: dict[str, NatGateway] = {}
        self.registries_by_name: dict[str, list[str]] = defaultdict(list)
        self.registries_by_login_server: dict[str, list[str]] = defaultdict(list)
        self.registries_by_group: dict[str, list[str]] = defaultdict(list)
        self.row_counts: dict[str, int] = defaultdict(int)
        self.role_assignment_count = 0
        self.tenant_scope_authorization = False
        self.gaps: list[Gap] = []
        self.notes: list[str] = []
        self._pending_replicas: list[tuple[str, str]] = []

    # -- building -------------------------------------------------------------------------------

    @classmethod
    def from_rows(cls, rows: Iterable[dict], progress=None) -> Inventory:
        inventory = cls()
        for count, row in enumerate(rows, start=1):
            inventory.add(row)
            if count % 200_000 == 0:
                gc.freeze()  # what the inventory holds lives for the whole run: stop rescanning it
                if progress:
                    progress(f"read {count:,} rows")
        inventory.finish()
        return inventory

    def collected(self, row_type: str) -> bool:
        """Whether the snapshot holds any row of this type (absent types mean: not collected)."""
        return self.row_counts.get(row_type, 0) > 0

    def missing(self, row_types: Iterable[str], subscriptions: set[str] | None) -> list[Gap]:
        """Collection gaps that may hide rows of these types for these subscriptions (None: anywhere)."""
        return [gap for gap in self.gaps if any(gap.covers(row_type, subscriptions) for row_type in row_types)]

    def add(self, row: dict) -> None:
        row_type = row.get("type", "")
        self.row_counts[row_type] += 1
        handler = self._HANDLERS.get(row_type)
        if handler is None:
            return
        try:
            handler(self, row)
        except (AttributeError, TypeError, ValueError) as exc:  # a malformed row must not stop the run
            self.notes.append(f"row {row.get('id')}: ignored, unexpected shape ({exc})")

    def _add_cluster(self, row: dict) -> None:
        cluster = Cluster.from_row(row)
        self.clusters[cluster.key] = cluster

    def _add_registry(self, row: dict) -> None:
        registry = Registry.from_row(row)
        key = registry.key
        self.registries[key] = registry
        self.registries_by_name[registry.name.lower()].append(key)
        if registry.login_server:
            self.registries_by_login_server[registry.login_server].append(key)
        group = resource_group_id(key)
        if group:
            self.registries_by_group[group].append(key)

    def _add_replication(self, row: dict) -> None:
        self._pending_replicas.append((parent_id(row["id"]), norm_location(row.get("location"))))

    def _add_identity(self, row: dict) -> None:
        self.identities[norm_id(row["id"])] = _text(dig(row, "properties", "principalId")).lower()

    def _add_role_assignment(self, row: dict) -> None:
        props = row.get("properties") if isinstance(row.get("properties"), dict) else {}
        scope = norm_id(dig(props, "scope")) or norm_id(row["id"]).split("/providers/microsoft.authorization/")[0]
        scope = scope or ROOT_SCOPE
        # Scopes, role ids and types repeat across millions of assignments: intern them once.
        assignment = RoleAssignment(
            id=row["id"],
            scope=sys.intern(scope),
            principal_id=_text(dig(props, "principalId")).lower(),
            principal_type=sys.intern(_text(dig(props, "principalType"))),
            role_guid=sys.intern(role_definition_guid(dig(props, "roleDefinitionId"))),
            condition=_text(dig(props, "condition")),
        )
        self.role_assignment_count += 1
        if scope == ROOT_SCOPE or scope.startswith(MG_PREFIX):
            self.tenant_scope_authorization = True
        if assignment.principal_type.lower() in ("group", "foreigngroup"):
            self.group_assignments_by_scope[scope].append(assignment)
        self.assignments_by_principal[assignment.principal_id].append(assignment)

    def _add_role_definition(self, row: dict) -> None:
        definition = role_definition_from_row(row)
        if definition is None:
            self.notes.append(f"role definition row {row.get('id')}: no GUID in id; ignored")
            return
        if definition.role_type.lower() == "builtinrole":
            self.tenant_scope_authorization = True  # built-ins appear only in tenant/MG-scope queries
        self.role_definitions[definition.guid] = definition

    def _add_subscription(self, row: dict) -> None:
        sub = (_text(row.get("subscriptionId")) or subscription_of(row["id"])).lower()
        if not sub:
            return
        chain = management_group_chain(row.get("properties"))
        self.subscriptions[sub] = SubscriptionInfo(
            id=sub, name=_text(row.get("name")), ancestors=chain or [], has_ancestry=bool(chain))

    def _add_vnet(self, row: dict) -> None:
        key = norm_id(row["id"])
        props = row.get("properties") if isinstance(row.get("properties"), dict) else {}
        subnets = {}
        for subnet in as_list(dig(props, "subnets")):
            subnet_key = norm_id(dig(subnet, "id")) or f"{key}/subnets/{_text(dig(subnet, 'name')).lower()}"
            subnets[subnet_key] = Subnet(subnet_key, norm_id(dig(subnet, "properties", "natGateway", "id")))
            self.subnet_vnet[subnet_key] = key
        self.vnets_by_group[resource_group_id(key)].append(key)
        self.vnets[key] = VirtualNetwork(
            id=row["id"],
            dns_servers=[s for s in as_list(dig(props, "dhcpOptions", "dnsServers")) if isinstance(s, str) and s],
            subnets=subnets,
            peerings=[
                Peering(
                    norm_id(dig(p, "properties", "remoteVirtualNetwork", "id")),
                    _text(dig(p, "properties", "peeringState")),
                    _bool_or_none(dig(p, "properties", "allowVirtualNetworkAccess")) is not False,
                )
                for p in as_list(dig(props, "virtualNetworkPeerings"))
            ],
        )

    def _add_private_endpoint(self, row: dict) -> None:
        key = norm_id(row["id"])
        props = row.get("properties") if isinstance(row.get("properties"), dict) else {}
        targets: dict[str, str] = {}
        for conn in as_list(dig(props, "privateLinkServiceConnections")) + as_list(
            dig(props, "manualPrivateLinkServiceConnections")
        ):
            target = norm_id(dig(conn, "properties", "privateLinkServiceId"))
            if target:
                targets[target] = _text(dig(conn, "properties", "privateLinkServiceConnectionState", "status"))
                self.endpoints_by_registry[target].append(key)
        self.private_endpoints[key] = PrivateEndpoint(row["id"], norm_id(dig(props, "subnet", "id")), targets)

    def _add_dns_link(self, row: dict) -> None:
        link_id = norm_id(row["id"])
        vnet_key = norm_id(dig(row, "properties", "virtualNetwork", "id"))
        zone_name = last_segment(parent_id(link_id))
        state = _text(dig(row, "properties", "virtualNetworkLinkState")) or _text(
            dig(row, "properties", "provisioningState")
        )
        if vnet_key:
            self.dns_links_by_vnet[vnet_key].append(DnsLink(row["id"], zone_name, vnet_key, state))

    def _add_dns_zone(self, row: dict) -> None:
        if last_segment(row["id"]) == ACR_PRIVATE_DNS_ZONE:
            self.acr_dns_zones.append(row["id"])

    def _add_public_ip(self, row: dict) -> None:
        self.public_ips[norm_id(row["id"])] = _text(dig(row, "properties", "ipAddress"))

    def _add_nat_gateway(self, row: dict) -> None:
        props = row.get("properties") if isinstance(row.get("properties"), dict) else {}
        self.nat_gateways[norm_id(row["id"])] = NatGateway(
            row["id"],
            [norm_id(dig(ip, "id")) for ip in as_list(dig(props, "publicIpAddresses"))],
            bool(as_list(dig(props, "publicIpPrefixes"))),
        )

    _HANDLERS = {
        T_CLUSTER: _add_cluster,
        T_REGISTRY: _add_registry,
        T_REPLICATION: _add_replication,
        T_IDENTITY: _add_identity,
        T_ROLE_ASSIGNMENT: _add_role_assignment,
        T_ROLE_DEFINITION: _add_role_definition,
        T_SUBSCRIPTION: _add_subscription,
        T_VNET: _add_vnet,
        T_PRIVATE_ENDPOINT: _add_private_endpoint,
        T_DNS_ZONE: _add_dns_zone,
        T_DNS_LINK: _add_dns_link,
        T_PUBLIC_IP: _add_public_ip,
        T_NAT_GATEWAY: _add_nat_gateway,
    }

    def finish(self) -> None:
        for registry_key, location in self._pending_replicas:
            registry = self.registries.get(registry_key)
            if registry is not None and location:
                registry.replica_locations.append(location)
        self._pending_replicas.clear()

    # -- queries ----------------------------------------------------------------------------------

    def in_scope(self, subscription_id: str) -> bool:
        return subscription_id.lower() in self.subscriptions and not self.missing(
            [T_IDENTITY], {subscription_id.lower()})

    def ancestor_scopes(self, resource_id: str) -> tuple[list[tuple[str, str]], str]:
        """Scopes whose assignments apply to `resource_id`, nearest first, with a label each,
        and a reason ('' when complete) why management-group ancestry is unknown."""
        key = norm_id(resource_id)
        scopes = [(key, "registry" if "/registries/" in key else "resource")]
        group = resource_group_id(key)
        if group:
            scopes.append((group, "resource group"))
        sub = subscription_of(key)
        gap = ""
        if sub:
            scopes.append((f"/subscriptions/{sub}", "subscription"))
            info = self.subscriptions.get(sub)
            if info is None:
                gap = f"subscription {sub} is not in the snapshot, so its management groups are unknown"
            elif not info.has_ancestry:
                gap = f"subscription {sub} has no managementGroupAncestorsChain in the snapshot"
            else:
                scopes.extend((management_group_scope(mg), f"management group {mg}") for mg in info.ancestors)
        scopes.append((ROOT_SCOPE, "root"))
        return scopes, gap
