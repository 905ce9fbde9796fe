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
from typing import Any

import orjson

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
T_DENY_ASSIGNMENT = "microsoft.authorization/denyassignments"
T_GRAPH_SERVICE_PRINCIPAL = "microsoft.graph/serviceprincipals"
T_GRAPH_GROUP = "microsoft.graph/groups"
T_GRAPH_APPLICATION = "microsoft.graph/applications"
T_KUBE_EVENTS = "containerinsights/kubeevents"
T_CONTAINER_INVENTORY = "containerinsights/containerinventory"
EVERYONE = "00000000-0000-0000-0000-000000000000"  # the principal id deny assignments use for all principals
# Principals that never pull images; their role assignments (often most of a tenant's) are not kept.
NEVER_PULLING_PRINCIPALS = frozenset({"user", "device"})

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
    _key: str = field(default="", init=False, repr=False, compare=False)  # norm_id(id), worked out when first asked

    @property
    def key(self) -> str:
        key = self._key
        if not key:
            key = self._key = norm_id(self.id)
        return key

    @property
    def owner(self) -> str:
        for name, value in self.tags.items():
            if name.lower() == "owner":
                return value
        return ""


def _resource_fields(row: dict) -> dict:
    rid = row["id"].strip()
    rid = rid.rstrip("/") or rid  # `…/aks-1/` and `…/aks-1` are one resource
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
    provisioning_state: str = ""  # present on a complete row, whatever the identity
    identity_type: str = ""
    service_principal_client_id: str = ""
    kubelet_object_id: str = ""
    kubelet_resource_id: str = ""
    node_resource_group: str = ""
    node_subnet_ids: list[str] = field(default_factory=list)
    outbound_type: str = ""
    load_balancer_ip_ids: list[str] = field(default_factory=list)
    managed_nat_ip_ids: list[str] = field(default_factory=list)
    insights_workspace: str = ""  # Log Analytics workspace of Container Insights (normalised id), or ''

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
            provisioning_state=_text(dig(props, "provisioningState")),
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
            insights_workspace=norm_id(workspace_of(props)),
        )


def workspace_of(properties: Any) -> str:
    """The Log Analytics workspace (ARM id) a cluster's Container Insights sends to, or '' if none.

    Read from `addonProfiles.omsagent.config.logAnalyticsWorkspaceResourceID`, with any key casing (`omsAgent`,
    `logAnalyticsWorkspaceResourceId`, ...), unless the add-on says `enabled: false` (a missing `enabled` with a
    workspace configured counts as on); else from
    `azureMonitorProfile.containerInsights.logAnalyticsWorkspaceResourceId` (newer API versions). Not from
    `azureMonitorProfile.metrics`: managed Prometheus goes to an Azure Monitor workspace, not Log Analytics.
    """
    sources = ((dig(properties, "addonProfiles", "omsagent"), ("config", "logAnalyticsWorkspaceResourceID")),
               (dig(properties, "azureMonitorProfile", "containerInsights"), ("logAnalyticsWorkspaceResourceId",)))
    for profile, path in sources:
        if not isinstance(profile, dict) or _is_false(dig(profile, "enabled")):
            continue
        workspace = dig(profile, *path)
        if isinstance(workspace, str) and workspace.strip():
            workspace = workspace.strip().rstrip("/")
            return workspace if workspace.startswith("/") else "/" + workspace
    return ""


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


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


def _is_tenant_scope(scope: str) -> bool:
    return scope == ROOT_SCOPE or scope.startswith(MG_PREFIX)


def _is_group(principal_type: str) -> bool:
    return principal_type in ("Group", "ForeignGroup") or principal_type.lower() in ("group", "foreigngroup")


@dataclass
class RoleAssignmentShare:
    """Role assignments read in another process (`Inventory.role_assignment_share`), in plain picklable form."""

    assignments: list[tuple[str, str, str, str, str, str]]  # RoleAssignment's fields, in order
    rows: int
    role_assignment_count: int
    never_pulling_assignments: int
    unreadable_rows: int
    unreadable: dict[tuple[str, str], list]


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


@dataclass(slots=True)
class DenyAssignment:
    id: str
    name: str
    description: str
    scope: str  # normalised
    applies_to_children: bool
    permissions: list[Permission]
    principals: frozenset[str]  # object ids (lower-case); EVERYONE for all principals
    excluded: frozenset[str]
    groups: frozenset[str]  # those of the ids above that are groups (membership decides)
    created_by: str
    system_protected: bool


def deny_assignment_from_row(row: dict) -> DenyAssignment | None:
    props = row.get("properties")
    if not isinstance(props, dict) or not props:
        return None
    scope = norm_id(dig(props, "scope")) or norm_id(row["id"]).split("/providers/microsoft.authorization/")[0]

    def ids(key: str, kinds: tuple[str, ...] = ()) -> frozenset[str]:
        return frozenset(_text(dig(p, "id")).lower() for p in as_list(dig(props, key))
                         if _text(dig(p, "id")) and (not kinds or _text(dig(p, "type")).lower() in kinds))

    return DenyAssignment(
        id=row["id"], name=_text(dig(props, "denyAssignmentName")) or _text(row.get("name")),
        description=_text(dig(props, "description")), scope=scope or ROOT_SCOPE,
        applies_to_children=dig(props, "doNotApplyToChildScopes") is not True,
        permissions=[Permission(_strings(dig(p, "actions")), _strings(dig(p, "notActions")),
                                _strings(dig(p, "dataActions")), _strings(dig(p, "notDataActions")))
                     for p in as_list(dig(props, "permissions")) if isinstance(p, dict)],
        principals=ids("principals"), excluded=ids("excludePrincipals"),
        groups=ids("principals", ("group", "foreigngroup")) | ids("excludePrincipals", ("group", "foreigngroup")),
        created_by=_text(dig(props, "createdBy")), system_protected=dig(props, "isSystemProtected") is True)


@dataclass(slots=True)
class ServicePrincipal:
    object_id: str  # '' when Microsoft Graph says no service principal has this appId
    app_id: str
    display_name: str
    kind: str  # servicePrincipalType: Application, ManagedIdentity, ...


@dataclass(slots=True)
class AppCredential:
    key_id: str
    display_name: str
    end: str  # ISO 8601 end date-time as Graph returns it
    kind: str  # password or certificate


@dataclass(slots=True)
class Application:
    app_id: str
    found: bool  # False: no application object in this tenant (a managed identity, or another tenant's app)
    credentials: list[AppCredential]


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
        self.connected_peers: dict[str, frozenset[str]] = {}  # VNet key -> VNets peered and connected (network.py)
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
        self.deny_assignments_by_scope: dict[str, list[DenyAssignment]] = defaultdict(list)
        self.service_principals: dict[str, ServicePrincipal] = {}  # appId -> service principal (object id or '')
        self.group_members: dict[str, frozenset[str] | None] = {}  # group id -> SP members; None: not resolved
        self.applications: dict[str, Application] = {}  # appId -> application and its credentials
        self.insights_rows: list[dict] = []  # Container Insights rows (observed pulls), read by auditors.observed
        self.permissions: dict[str, bool | None] = {}  # what optional sources were allowed to read (None: not asked)
        self.deny_listed = False  # deny assignments were listed (live, or a captured snapshot says so)
        self.captured_at: str = ""  # when the data was captured (a snapshot's manifest), '' = now
        self.row_counts: dict[str, int] = defaultdict(int)
        self.role_assignment_count = 0
        self.never_pulling_assignments = 0  # users' and devices' assignments, not kept
        self.duplicate_rows = 0  # identical rows of one resource, merged
        self.conflicting: set[str] = set()  # keys of resources whose duplicate rows disagree (verdicts Unknown)
        self.unreadable_rows = 0
        self.tenant_scope_authorization = False
        self.gaps: list[Gap] = []
        self.notes: list[str] = []
        self._pending_replicas: list[tuple[str, str]] = []
        self._fingerprints: dict[str, int] = {}  # resource key -> hash of its row, to tell duplicates apart
        self._assignments: list[RoleAssignment] = []  # every kept assignment, indexed by principal in finish()
        self._indexed_principals: set[str] = set()
        self._scopes: dict[str, str] = {}  # as written -> normalised, interned
        self._role_guids: dict[str, str] = {}  # a role definition's GUID as written -> lower-case, validated
        self._unreadable: dict[tuple[str, str], list] = {}  # (type, subscription) -> [count, example]

    # -- building -------------------------------------------------------------------------------

    @classmethod
    def from_rows(cls, rows: Iterable[dict], progress=None) -> Inventory:
        inventory = cls()
        inventory.add_rows(rows, progress)
        inventory.finish()
        return inventory

    def add_rows(self, rows: Iterable[dict], progress=None) -> None:
        # What the inventory holds lives for the whole run and holds no cycles: the cyclic collector would only
        # rescan millions of objects again and again while they are built.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for count, row in enumerate(rows, start=1):
                self.add(row)
                if progress and count % 250_000 == 0:
                    progress(f"read {count:,} rows")
        finally:
            gc.freeze()
            if collecting:
                gc.enable()

    def role_assignment_share(self) -> RoleAssignmentShare:
        """What this inventory made of role assignment rows (and nothing else), for `absorb_role_assignments` in
        another process: the rows of a share of a large file, read in parallel."""
        return RoleAssignmentShare(
            [(a.id, a.scope, a.principal_id, a.principal_type, a.role_guid, a.condition) for a in self._assignments],
            self.row_counts.get(T_ROLE_ASSIGNMENT, 0), self.role_assignment_count, self.never_pulling_assignments,
            self.unreadable_rows, dict(self._unreadable))

    @staticmethod
    def role_assignments_of(share: RoleAssignmentShare) -> list[RoleAssignment]:
        """A share's role assignments made again in this process, for `absorb_role_assignments` (making them is
        most of taking a share in: done as shares arrive, not when their turn comes)."""
        intern = sys.intern
        return [RoleAssignment(assignment_id, intern(scope), principal_id, intern(principal_type), intern(role_guid),
                               condition)
                for assignment_id, scope, principal_id, principal_type, role_guid, condition in share.assignments]

    def absorb_role_assignments(self, share: RoleAssignmentShare, made: list[RoleAssignment]) -> None:
        """A share's role assignments (`made` from it by `role_assignments_of`), as if its rows had been added
        here, now. What `_keep_assignment` does, in bulk: half its time per row, on the load's critical path."""
        self._assignments.extend(made)
        by_scope = self.group_assignments_by_scope
        for assignment in made:
            if _is_group(assignment.principal_type):
                by_scope[assignment.scope].append(assignment)
        if not self.tenant_scope_authorization:
            self.tenant_scope_authorization = any(_is_tenant_scope(a.scope) for a in made)
        self.row_counts[T_ROLE_ASSIGNMENT] += share.rows
        self.role_assignment_count += share.role_assignment_count
        self.never_pulling_assignments += share.never_pulling_assignments
        self.unreadable_rows += share.unreadable_rows
        for key, (count, example) in share.unreadable.items():
            self._unreadable.setdefault(key, [0, example])[0] += count

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
            self._unreadable_row(row, row_type, f"unexpected shape ({exc})")

    def _unreadable_row(self, row: dict, row_type: str, why: str) -> None:
        """A row the model cannot read is a gap for its type and subscription, never an absence: a Fail that
        depends on it becomes Unknown (the engine), and the run counts it."""
        self.unreadable_rows += 1
        row_id = row.get("id") if isinstance(row.get("id"), str) else ""
        scope = dig(row, "properties", "scope") if isinstance(row.get("properties"), dict) else None
        subscription = subscription_of(scope if isinstance(scope, str) else row_id)
        entry = self._unreadable.setdefault((row_type, subscription), [0, f"{row_id or '(no id)'}: {why}"])
        entry[0] += 1

    def _first_of_key(self, key: str, row: dict) -> bool:
        """True for the first row of a resource; a repeat is merged when identical, and marks the resource as
        conflicting (its verdicts Unknown) when it differs."""
        fingerprint = hash(orjson.dumps(row, default=str))
        seen = self._fingerprints.get(key)
        if seen is None:
            self._fingerprints[key] = fingerprint
            return True
        if seen == fingerprint:
            self.duplicate_rows += 1
        elif key not in self.conflicting:
            self.conflicting.add(key)
            self.notes.append(f"row {key}: several rows with this id disagree; the first is used and its verdicts "
                              "are Unknown")
        return False

    def _add_cluster(self, row: dict) -> None:
        cluster = Cluster.from_row(row)
        if self._first_of_key(cluster.key, row):
            self.clusters[cluster.key] = cluster

    def _add_registry(self, row: dict) -> None:
        registry = Registry.from_row(row)
        key = registry.key
        if not self._first_of_key(key, row):
            return
        self.registries[key] = registry
        self.registries_by_name[registry.name.lower()].append(key)
        if registry.login_server:
            self.registries_by_login_server[registry.login_server].append(key)
        group = resource_group_id(key)
        if group:
            self.registries_by_group[group].append(key)

    def _add_replication(self, row: dict) -> None:
        self._pending_replicas.append((parent_id(row["id"]), norm_location(row.get("location"))))

    def _readable(self, row: dict, row_type: str) -> dict | None:
        """The row's properties when it is the first, readable row of its resource; else None (and recorded)."""
        props = row.get("properties")
        if not isinstance(props, dict) or not props:
            self._unreadable_row(row, row_type, "`properties` is missing or not an object")
            return None
        return props if self._first_of_key(norm_id(row["id"]), row) else None

    def _add_identity(self, row: dict) -> None:
        key = norm_id(row["id"])
        if self._first_of_key(key, row):  # existence is what counts; a row without properties still exists
            self.identities[key] = _text(dig(row, "properties", "principalId")).lower()

    def _add_role_assignment(self, row: dict) -> None:
        props = row.get("properties")
        if props.__class__ is not dict or not props:
            self._unreadable_row(row, T_ROLE_ASSIGNMENT, "`properties` is missing or not an object")
            return
        self.role_assignment_count += 1
        principal_type = props.get("principalType")
        if principal_type.__class__ is not str:  # not Resource Graph's spelling (a PascalCase export), or absent
            principal_type = _text(dig(props, "principalType"))
        if principal_type.lower() in NEVER_PULLING_PRINCIPALS:
            self.never_pulling_assignments += 1
            return
        row_id = row["id"]
        principal_id, role_id = props.get("principalId"), props.get("roleDefinitionId")
        if principal_id.__class__ is not str or role_id.__class__ is not str:
            principal_id, role_id = dig(props, "principalId"), dig(props, "roleDefinitionId")
        role_guid = self._role_guid(role_id)
        if not role_guid or principal_id.__class__ is not str or not principal_id:
            self.role_assignment_count -= 1
            self._unreadable_row(row, T_ROLE_ASSIGNMENT, "no principalId or roleDefinitionId")
            return
        written = props.get("scope")
        scope = self._scopes.get(written) if written.__class__ is str else None
        if scope is None:
            scope = norm_id(written) or norm_id(row_id).split("/providers/microsoft.authorization/")[0] or ROOT_SCOPE
            scope = sys.intern(scope)  # scopes repeat across millions of assignments
            if written.__class__ is str:
                self._scopes[written] = scope
        condition = props.get("condition")
        assignment = RoleAssignment(
            id=row_id, scope=scope, principal_id=principal_id.lower(), principal_type=sys.intern(principal_type),
            role_guid=role_guid, condition=condition if condition.__class__ is str else "",
        )
        self._keep_assignment(assignment)

    def _keep_assignment(self, assignment: RoleAssignment) -> None:
        if _is_tenant_scope(assignment.scope):
            self.tenant_scope_authorization = True
        if _is_group(assignment.principal_type):
            self.group_assignments_by_scope[assignment.scope].append(assignment)
        self._assignments.append(assignment)

    def _role_guid(self, role_id) -> str:
        """The GUID of a role definition id, cached by the id's last 36 characters: a tenant has a few hundred
        roles but its assignments spell their ids in as many ways as it has subscriptions."""
        if role_id.__class__ is not str:
            return ""
        tail = role_id[-36:]
        guid = self._role_guids.get(tail)
        if guid is not None and role_id[-53:-36].lower() == "/roledefinitions/":
            return guid
        guid = sys.intern(role_definition_guid(role_id))
        if guid == tail.lower():
            self._role_guids[tail] = guid
        return guid

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
        if not self._first_of_key(f"/subscriptions/{sub}", row):
            return
        chain = management_group_chain(row.get("properties"))
        self.subscriptions[sub] = SubscriptionInfo(
            id=sub, name=_text(row.get("name")), ancestors=chain or [], has_ancestry=bool(chain))

    def _add_vnet(self, row: dict) -> None:
        key = norm_id(row["id"])
        props = self._readable(row, T_VNET)
        if props is None:
            return
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
        props = self._readable(row, T_PRIVATE_ENDPOINT)
        if props is None:
            return
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
        if self._readable(row, T_DNS_LINK) is None:
            return
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
        props = self._readable(row, T_PUBLIC_IP)
        if props is not None:
            self.public_ips[norm_id(row["id"])] = _text(dig(props, "ipAddress"))

    def _add_nat_gateway(self, row: dict) -> None:
        props = self._readable(row, T_NAT_GATEWAY)
        if props is None:
            return
        self.nat_gateways[norm_id(row["id"])] = NatGateway(
            row["id"],
            [norm_id(dig(ip, "id")) for ip in as_list(dig(props, "publicIpAddresses"))],
            bool(as_list(dig(props, "publicIpPrefixes"))),
        )

    def _add_deny_assignment(self, row: dict) -> None:
        deny = deny_assignment_from_row(row)
        if deny is None:
            self._unreadable_row(row, T_DENY_ASSIGNMENT, "`properties` is missing or not an object")
        elif self._first_of_key(norm_id(deny.id), row):
            self.deny_assignments_by_scope[deny.scope].append(deny)

    def _add_graph_service_principal(self, row: dict) -> None:
        app_id = _text(row.get("appId")).lower()
        if not app_id:
            self._unreadable_row(row, T_GRAPH_SERVICE_PRINCIPAL, "no appId")
            return
        object_id = "" if row.get("notFound") is True else _text(row.get("id")).lower()
        self.service_principals[app_id] = ServicePrincipal(object_id, app_id, _text(row.get("displayName")),
                                                           _text(row.get("servicePrincipalType")))

    def _add_graph_group(self, row: dict) -> None:
        group_id = _text(row.get("id")).lower()
        if not group_id:
            self._unreadable_row(row, T_GRAPH_GROUP, "no id")
            return
        members = row.get("transitiveMembers")
        if row.get("notFound") is True:
            self.group_members[group_id] = frozenset()  # a deleted group grants nothing
        elif isinstance(members, list):
            self.group_members[group_id] = frozenset(m.lower() for m in members if isinstance(m, str))
        else:
            self.group_members.setdefault(group_id, None)

    def _add_graph_application(self, row: dict) -> None:
        app_id = _text(row.get("appId")).lower()
        if not app_id:
            self._unreadable_row(row, T_GRAPH_APPLICATION, "no appId")
            return
        credentials = [
            AppCredential(_text(c.get("keyId")), _text(c.get("displayName")), _text(c.get("endDateTime")), kind)
            for key, kind in (("passwordCredentials", "password"), ("keyCredentials", "certificate"))
            for c in as_list(row.get(key)) if isinstance(c, dict)
        ]
        self.applications[app_id] = Application(app_id, row.get("notFound") is not True, credentials)

    def _add_insights_row(self, row: dict) -> None:
        self.insights_rows.append(row)

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
        T_DENY_ASSIGNMENT: _add_deny_assignment,
        T_GRAPH_SERVICE_PRINCIPAL: _add_graph_service_principal,
        T_GRAPH_GROUP: _add_graph_group,
        T_GRAPH_APPLICATION: _add_graph_application,
        T_KUBE_EVENTS: _add_insights_row,
        T_CONTAINER_INVENTORY: _add_insights_row,
    }

    def finish(self) -> None:
        for registry_key, location in self._pending_replicas:
            registry = self.registries.get(registry_key)
            if registry is not None and location:
                registry.replica_locations.append(location)
        self._pending_replicas.clear()
        for (row_type, subscription), (count, example) in sorted(self._unreadable.items()):
            where = f"subscription {subscription}" if subscription else "management-group or tenant scope"
            self.gaps.append(Gap("unreadable rows", (row_type,), frozenset({subscription} - {""}),
                                 f"{count} {row_type} row(s) at {where} could not be read, e.g. {example}"))
        self._unreadable.clear()
        self._fingerprints.clear()
        self._scopes.clear()
        self.index_principals(self._pull_principals())

    def _pull_principals(self) -> set[str]:
        """Object ids that may pull for a cluster: kubelet identities and service principals Graph resolved."""
        principals = {c.kubelet_object_id for c in self.clusters.values() if c.kubelet_object_id}
        principals.update(self.identities.values())
        principals.update(sp.object_id for sp in self.service_principals.values() if sp.object_id)
        return principals - {""}

    def index_principals(self, principal_ids) -> None:
        """Index the role assignments of these principals (the assignments of any other principal are looked up
        only when asked: most of a tenant's assignments belong to principals that pull for no cluster)."""
        wanted = set(principal_ids) - self._indexed_principals
        if not wanted:
            return
        self._indexed_principals |= wanted
        for assignment in self._assignments:
            if assignment.principal_id in wanted:
                self.assignments_by_principal[assignment.principal_id].append(assignment)
        for principal in wanted:
            listed = self.assignments_by_principal.get(principal)
            if listed and len(listed) > 1:
                self.assignments_by_principal[principal] = self._merged(listed)

    def _merged(self, assignments: list[RoleAssignment]) -> list[RoleAssignment]:
        """One principal's assignments with repeated rows merged; rows of one assignment id that disagree keep the
        first and mark the id conflicting (checked here, per principal, rather than for millions at load)."""
        first_of: dict[str, RoleAssignment] = {}
        kept = []
        for assignment in assignments:
            key = norm_id(assignment.id)
            first = first_of.setdefault(key, assignment)
            if first is assignment:
                kept.append(assignment)
            elif (first.scope, first.role_guid, first.condition) == (assignment.scope, assignment.role_guid,
                                                                     assignment.condition):
                self.duplicate_rows += 1
            elif key not in self.conflicting:
                self.conflicting.add(key)
                self.notes.append(f"row {key}: several rows with this id disagree; the first is used and the "
                                  "verdicts it decides are Unknown")
        return kept

    def assignments_of(self, principal_id: str) -> list[RoleAssignment]:
        if principal_id not in self._indexed_principals:
            self.index_principals({principal_id})
        return self.assignments_by_principal.get(principal_id, [])

    # -- queries ----------------------------------------------------------------------------------

    def deny_unchecked(self, resource_id: str) -> str:
        """Why deny assignments over this resource are unknown, or '' when they were listed."""
        gaps = self.missing([T_DENY_ASSIGNMENT], {subscription_of(resource_id)})
        if gaps:
            return f"deny assignments could not be listed ({gaps[0].reason})"
        if self.deny_listed or self.collected(T_DENY_ASSIGNMENT):
            return ""
        return ("deny assignments were not collected (Resource Graph does not hold them: a live run lists them with "
                "Microsoft.Authorization/denyAssignments/read)")

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
