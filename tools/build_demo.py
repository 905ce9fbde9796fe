"""Build the embedded demo estate (auditors/demo/*.json*) — a small Contoso tenant in Resource Graph shape.

Every rule has at least one Pass and one Fail here, and Unknown where it can occur; the comments on
each resource say which verdicts it is there to produce. Run `python tools/build_demo.py` after editing;
tests/test_demo.py fails when the committed files and this builder disagree.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent.parent / "auditors" / "demo"
NS = uuid.UUID("6f1c1e2a-6c1d-4c55-9a43-8a4a5c0d0e11")
TENANT = "a1b2c3d4-0000-4000-8000-00000000c0de"


def guid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


SUB = {name: guid(f"sub:{name}") for name in (
    "platform-connectivity", "platform-shared", "corp-payments", "corp-orders", "corp-analytics", "online-web",
)}
OUT_OF_SCOPE_SUB = guid("sub:partner-sandbox")  # referenced, never collected
MG_TREE = {  # name: (display name, parent)
    TENANT: ("Tenant Root Group", None),
    "mg-contoso": ("Contoso", TENANT),
    "mg-platform": ("Platform", "mg-contoso"),
    "mg-landingzones": ("Landing zones", "mg-contoso"),
    "mg-corp": ("Corp", "mg-landingzones"),
    "mg-online": ("Online", "mg-landingzones"),
}
SUB_PARENT = {
    "platform-connectivity": "mg-platform", "platform-shared": "mg-platform", "corp-payments": "mg-corp",
    "corp-orders": "mg-corp", "corp-analytics": "mg-corp", "online-web": "mg-online",
}


def chain(mg: str | None) -> list[dict]:
    out = []
    while mg:
        out.append({"name": mg, "displayName": MG_TREE[mg][0]})
        mg = MG_TREE[mg][1]
    return out


def rid(sub: str, group: str, provider_path: str) -> str:
    return f"/subscriptions/{SUB.get(sub, sub)}/resourceGroups/{group}/providers/{provider_path}"


def resource(sub: str, group: str, provider_path: str, location: str, props: dict, **extra) -> dict:
    row_id = rid(sub, group, provider_path)
    parts = provider_path.split("/")
    row = {
        "id": row_id, "name": parts[-1], "type": "/".join([parts[0], *parts[1::2]]).lower(),
        "location": location, "resourceGroup": group.lower(), "subscriptionId": SUB.get(sub, sub),
        "tenantId": TENANT, "tags": extra.pop("tags", {}), "properties": props,
    }
    row.update(extra)
    return row


# ---------------------------------------------------------------- identities (kubelet, one per cluster)
def kubelet(cluster: str, sub: str, node_rg: str) -> dict:
    return {"resourceId": rid(sub, node_rg, f"Microsoft.ManagedIdentity/userAssignedIdentities/{cluster}-agentpool"),
            "clientId": guid(f"client:{cluster}"), "objectId": guid(f"kubelet:{cluster}")}


def identity_row(cluster: str, sub: str, node_rg: str, location: str) -> dict:
    return resource(sub, node_rg, f"Microsoft.ManagedIdentity/userAssignedIdentities/{cluster}-agentpool", location,
                    {"principalId": guid(f"kubelet:{cluster}"), "clientId": guid(f"client:{cluster}"),
                     "tenantId": TENANT})


# ---------------------------------------------------------------- network
def pip(sub: str, group: str, name: str, address: str, location: str) -> dict:
    return resource(sub, group, f"Microsoft.Network/publicIPAddresses/{name}", location,
                    {"ipAddress": address, "publicIPAddressVersion": "IPv4", "publicIPAllocationMethod": "Static"},
                    sku={"name": "Standard"})


HUB = rid("platform-connectivity", "rg-network-hub", "Microsoft.Network/virtualNetworks/vnet-hub-weu")


def spoke(sub: str, name: str, prefix: str, location: str, *, peering: str | None = "Connected",
          dns_servers: list[str] | None = None, nat_gateway: str | None = None) -> dict:
    vnet_id = rid(sub, "rg-network", f"Microsoft.Network/virtualNetworks/{name}")
    subnet = {"id": f"{vnet_id}/subnets/snet-aks", "name": "snet-aks", "properties": {"addressPrefix": f"{prefix}/22"}}
    if nat_gateway:
        subnet["properties"]["natGateway"] = {"id": nat_gateway}
    peerings = []
    if peering:
        peerings.append({"id": f"{vnet_id}/virtualNetworkPeerings/to-hub", "name": "to-hub", "properties": {
            "remoteVirtualNetwork": {"id": HUB}, "peeringState": peering, "allowVirtualNetworkAccess": True,
            "allowForwardedTraffic": True, "useRemoteGateways": False}})
    return resource(sub, "rg-network", f"Microsoft.Network/virtualNetworks/{name}", location, {
        "addressSpace": {"addressPrefixes": [f"{prefix}/16"]},
        "dhcpOptions": {"dnsServers": dns_servers or []},
        "subnets": [subnet], "virtualNetworkPeerings": peerings})


def subnet_of(vnet_row: dict) -> str:
    # Resource Graph returns ids as ARM wrote them; one reference in lower case exercises case-insensitivity.
    return vnet_row["properties"]["subnets"][0]["id"]


# ---------------------------------------------------------------- clusters
CAPTURED_AT = "2026-11-29T06:00:00Z"  # the demo's verdicts are made for this moment (its manifest says so)
WORKSPACE = (f"/subscriptions/{SUB['platform-shared']}/resourceGroups/rg-monitoring/providers/"
             "Microsoft.OperationalInsights/workspaces/law-aks-weu")


def cluster(name: str, sub: str, location: str, *, tags: dict, subnet: str | None, outbound: str = "loadBalancer",
            egress_ips: list[str] = (), service_principal: str | None = None, kubelet_sub: str | None = None,
            kubelet_identity: bool = True, insights: bool = True) -> dict:
    node_rg = f"MC_rg-{name}_{name}_{location}"
    props = {
        "provisioningState": "Succeeded", "kubernetesVersion": "1.31.2", "dnsPrefix": name,
        "nodeResourceGroup": node_rg,
        "servicePrincipalProfile": {"clientId": service_principal or "msi"},
        "agentPoolProfiles": [{"name": "system", "mode": "System", "count": 3, "vmSize": "Standard_D4s_v5",
                               **({"vnetSubnetID": subnet} if subnet else {})}],
        "networkProfile": {"networkPlugin": "azure", "outboundType": outbound},
    }
    if outbound == "loadBalancer":
        props["networkProfile"]["loadBalancerProfile"] = {
            "managedOutboundIPs": {"count": len(egress_ips)}, "effectiveOutboundIPs": [{"id": i} for i in egress_ips]}
    if insights:  # Container Insights: events and container inventory go to the shared workspace
        props["addonProfiles"] = {"omsagent": {"enabled": True, "config": {
            "logAnalyticsWorkspaceResourceID": WORKSPACE, "useAADAuth": "true"}}}
    row = resource(sub, f"rg-{name}", f"Microsoft.ContainerService/managedClusters/{name}", location, props,
                   tags=tags, sku={"name": "Base", "tier": "Standard"})
    if service_principal is None:
        props["identityProfile"] = {"kubeletidentity": kubelet(name, kubelet_sub or sub, node_rg)}
        row["identity"] = {"type": "SystemAssigned", "principalId": guid(f"cp:{name}"), "tenantId": TENANT}
    return row


# ---------------------------------------------------------------- registries
def registry(name: str, sub: str, location: str, sku: str, *, tags: dict, admin: bool = False,
             anonymous: bool = False, public: str = "Enabled", default_action: str = "Allow",
             ip_rules: list[str] = (), endpoints: list[tuple[str, str]] = (),
             mode: str | None = "LegacyRegistryPermissions") -> dict:
    props = {"loginServer": f"{name}.azurecr.io", "provisioningState": "Succeeded", "adminUserEnabled": admin,
             "anonymousPullEnabled": anonymous, "publicNetworkAccess": public, "zoneRedundancy": "Disabled",
             "networkRuleBypassOptions": "AzureServices", "dataEndpointEnabled": False,
             "policies": {"azureADAuthenticationAsArmPolicy": {"status": "enabled"}}}
    registry_id = rid(sub, f"rg-{name}", f"Microsoft.ContainerRegistry/registries/{name}")
    if sku == "Premium":
        props["networkRuleSet"] = {"defaultAction": default_action,
                                   "ipRules": [{"action": "Allow", "value": v} for v in ip_rules]}
        props["privateEndpointConnections"] = [
            {"id": f"{registry_id}/privateEndpointConnections/{pe.rsplit('/', 1)[-1]}",
             "properties": {"privateEndpoint": {"id": pe},
                            "privateLinkServiceConnectionState": {"status": status, "description": ""}}}
            for pe, status in endpoints]
    if mode:
        props["roleAssignmentMode"] = mode
    return resource(sub, f"rg-{name}", f"Microsoft.ContainerRegistry/registries/{name}", location, props,
                    tags=tags, sku={"name": sku, "tier": sku})


# ---------------------------------------------------------------- authorization
BUILTIN = {
    "AcrPull": ("7f951dda-4ed3-4680-a7ca-43fe172d538d", ["Microsoft.ContainerRegistry/registries/pull/read"], []),
    "AcrPush": ("8311e382-0749-4cb8-b61a-304f252e45ec", ["Microsoft.ContainerRegistry/registries/pull/read",
                                                          "Microsoft.ContainerRegistry/registries/push/write"], []),
    "Owner": ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", ["*"], []),
    "Contributor": ("b24988ac-6180-42a0-ab88-20f7382dd24c", ["*"], []),
    "Reader": ("acdd72a7-3385-48ef-bd42-f606fba81ae7", ["*/read"], []),
    "Container Registry Repository Reader": (
        "b93aa761-3e63-49ed-ac28-beffa264f7ac", [],
        ["Microsoft.ContainerRegistry/registries/repositories/content/read",
         "Microsoft.ContainerRegistry/registries/repositories/metadata/read"]),
    "Storage Blob Data Reader": ("2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", ["Microsoft.Storage/*/read"], []),
}
CUSTOM_ROLE = ("Contoso Image Reader", guid("role:image-reader"), "platform-shared")


def role_definitions() -> list[dict]:
    rows = []
    for name, (role_guid, actions, data_actions) in BUILTIN.items():
        not_actions = ["Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
                       "Microsoft.Authorization/elevateAccess/Action"] if name == "Contributor" else []
        rows.append({"id": f"/providers/Microsoft.Authorization/RoleDefinitions/{role_guid}", "name": role_guid,
                     "type": "microsoft.authorization/roledefinitions", "tenantId": TENANT, "properties": {
                         "roleName": name, "type": "BuiltInRole", "assignableScopes": ["/"],
                         "permissions": [{"actions": actions, "notActions": not_actions,
                                          "dataActions": data_actions, "notDataActions": []}]}})
    name, role_guid, sub = CUSTOM_ROLE
    rows.append({"id": f"/subscriptions/{SUB[sub]}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}",
                 "name": role_guid, "type": "microsoft.authorization/roledefinitions", "subscriptionId": SUB[sub],
                 "tenantId": TENANT, "properties": {
                     "roleName": name, "type": "CustomRole", "assignableScopes": [f"/subscriptions/{SUB[sub]}"],
                     "permissions": [{"actions": ["Microsoft.ContainerRegistry/*/read"],
                                      "notActions": ["Microsoft.ContainerRegistry/registries/listCredentials/action"],
                                      "dataActions": [], "notDataActions": []}]}})
    return rows


def assignment(scope: str, principal: str, role: str, *, principal_type: str = "ServicePrincipal",
               condition: str | None = None, short_form: bool = False) -> dict:
    role_guid = CUSTOM_ROLE[1] if role == CUSTOM_ROLE[0] else BUILTIN[role][0]
    sub = scope.split("/")[2] if scope.startswith("/subscriptions/") else ""
    role_id = (f"/providers/Microsoft.Authorization/roleDefinitions/{role_guid}" if short_form or not sub
               else f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}")
    name = guid(f"ra:{scope}:{principal}:{role}")
    props = {"scope": scope, "principalId": principal, "principalType": principal_type, "roleDefinitionId": role_id,
             "createdOn": "2026-03-02T09:14:00Z", "updatedOn": "2026-03-02T09:14:00Z"}
    if condition:
        props.update(condition=condition, conditionVersion="2.0")
    return {"id": f"{scope.rstrip('/')}/providers/Microsoft.Authorization/roleAssignments/{name}", "name": name,
            "type": "microsoft.authorization/roleassignments", "subscriptionId": sub, "tenantId": TENANT,
            "properties": props}


def build() -> dict[str, object]:
    mc = "MC_rg-{0}_{0}_{1}"
    # Egress public IPs live in each cluster's node resource group, as AKS creates them.
    pips = {
        "aks-payments-prod": pip("corp-payments", mc.format("aks-payments-prod", "westeurope"), "kube-egress-1",
                                 "20.50.10.4", "westeurope"),
        "aks-orders-prod": pip("corp-orders", mc.format("aks-orders-prod", "westeurope"), "kube-egress-1",
                               "20.50.20.7", "westeurope"),
        "aks-orders-dr": pip("corp-orders", mc.format("aks-orders-dr", "northeurope"), "kube-egress-1",
                             "20.60.1.20", "northeurope"),
        "aks-web-eastus": pip("online-web", mc.format("aks-web-eastus", "eastus"), "kube-egress-1",
                              "52.170.8.9", "eastus"),
        "aks-analytics": pip("corp-analytics", mc.format("aks-analytics", "eastus"), "kube-egress-1",
                             "52.170.44.2", "eastus"),
        "aks-ml-training": pip("corp-analytics", mc.format("aks-ml-training", "westeurope"), "kube-egress-1",
                               "20.50.77.3", "westeurope"),
        "aks-batch-dev": pip("online-web", mc.format("aks-batch-dev", "westeurope"), "kube-egress-1",
                             "20.50.90.1", "westeurope"),
        "aks-legacy-billing": pip("corp-payments", mc.format("aks-legacy-billing", "westeurope"), "kube-egress-1",
                                  "20.50.91.1", "westeurope"),
        "aks-legacy-reports": pip("corp-analytics", mc.format("aks-legacy-reports", "westeurope"), "kube-egress-1",
                                  "20.50.92.1", "westeurope"),
    }
    nat_pip = pip("corp-payments", "rg-network", "pip-natgw-staging", "20.50.30.9", "westeurope")
    nat_gateway = resource("corp-payments", "rg-network", "Microsoft.Network/natGateways/natgw-staging", "westeurope",
                           {"publicIpAddresses": [{"id": nat_pip["id"]}], "idleTimeoutInMinutes": 4},
                           sku={"name": "Standard"})
    vnets = {
        "payments": spoke("corp-payments", "vnet-payments", "10.1.0.0", "westeurope"),
        "orders": spoke("corp-orders", "vnet-orders", "10.2.0.0", "westeurope"),
        "orders-dr": spoke("corp-orders", "vnet-orders-dr", "10.3.0.0", "northeurope", dns_servers=["10.0.0.4"]),
        "payments-stg": spoke("corp-payments", "vnet-payments-stg", "10.4.0.0", "westeurope",
                              peering="Disconnected", nat_gateway=nat_gateway["id"]),
        "online": spoke("online-web", "vnet-online", "10.5.0.0", "northeurope", peering=None),
        "web-eus": spoke("online-web", "vnet-web-eus", "10.6.0.0", "eastus", peering=None),
    }
    nat_gateway["properties"]["subnets"] = [{"id": subnet_of(vnets["payments-stg"])}]
    hub_pe_subnet = f"{HUB}/subnets/snet-privateendpoints"
    hub = resource("platform-connectivity", "rg-network-hub", "Microsoft.Network/virtualNetworks/vnet-hub-weu",
                   "westeurope", {
                       "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}, "dhcpOptions": {"dnsServers": []},
                       "subnets": [{"id": hub_pe_subnet, "name": "snet-privateendpoints",
                                    "properties": {"addressPrefix": "10.0.1.0/24"}}],
                       "virtualNetworkPeerings": [
                           {"id": f"{HUB}/virtualNetworkPeerings/to-{key}", "name": f"to-{key}", "properties": {
                               "remoteVirtualNetwork": {"id": row["id"]},
                               "peeringState": row["properties"]["virtualNetworkPeerings"][0]["properties"][
                                   "peeringState"], "allowVirtualNetworkAccess": True}}
                           for key, row in vnets.items() if row["properties"]["virtualNetworkPeerings"]]},
                   tags={"owner": "network-team"})
    shared_id = rid("platform-shared", "rg-acrcontososhared",
                    "Microsoft.ContainerRegistry/registries/acrcontososhared")
    pe_shared = resource("platform-connectivity", "rg-network-hub",
                         "Microsoft.Network/privateEndpoints/pe-acrcontososhared", "westeurope", {
                             "subnet": {"id": hub_pe_subnet},
                             "privateLinkServiceConnections": [{"name": "acrcontososhared", "properties": {
                                 "privateLinkServiceId": shared_id, "groupIds": ["registry"],
                                 "privateLinkServiceConnectionState": {"status": "Approved"}}}],
                             "customDnsConfigs": []})
    zone_id = rid("platform-connectivity", "rg-dns", "Microsoft.Network/privateDnsZones/privatelink.azurecr.io")
    zone = {**resource("platform-connectivity", "rg-dns", "Microsoft.Network/privateDnsZones/privatelink.azurecr.io",
                       "global", {"numberOfRecordSets": 4, "numberOfVirtualNetworkLinks": 3}),
            "tags": {"owner": "network-team"}}
    links = [
        resource("platform-connectivity", "rg-dns",
                 f"Microsoft.Network/privateDnsZones/privatelink.azurecr.io/virtualNetworkLinks/link-{key}",
                 "global", {"virtualNetwork": {"id": vnet_id}, "registrationEnabled": False,
                            "virtualNetworkLinkState": "Completed", "provisioningState": "Succeeded"})
        # vnet-orders is deliberately not linked (AKS-ACR-004 Fail for aks-orders-prod)
        for key, vnet_id in (("hub", HUB), ("payments", vnets["payments"]["id"]),
                             ("orders-dr", vnets["orders-dr"]["id"]))
    ]
    assert zone["id"] == zone_id

    registries = [
        # Private-only, replicated: 007/009/011 Pass; the private-endpoint route for the corp clusters.
        registry("acrcontososhared", "platform-shared", "westeurope", "Premium", tags={"owner": "platform-team"},
                 public="Disabled", default_action="Deny", endpoints=[(pe_shared["id"], "Approved")]),
        # Firewalled, admin user on: 007 Fail, 011 Pass; egress-IP checks for 003.
        registry("acrcontosoedge", "platform-shared", "northeurope", "Premium", tags={"owner": "edge-team"},
                 admin=True, default_action="Deny", ip_rules=["20.50.20.0/24", "198.51.100.7"]),
        # Standard with anonymous pull: 009 Fail, 011 NotApplicable.
        # Its row lacks roleAssignmentMode (older API projection): the service default is assumed.
        registry("acrcontosolegacy", "platform-shared", "West Europe", "Standard", tags={"Owner": "platform-team"},
                 admin=True, anonymous=True, mode=None),
        # ABAC repository permissions, open to all networks: 011 Fail; AcrPull is not honoured (001 Fail).
        registry("acrcontosoabac", "platform-shared", "westeurope", "Premium", tags={"owner": "ml-platform"},
                 mode="AbacRepositoryPermissions"),
        # Basic: 009 and 011 NotApplicable.
        registry("acrcontosobasic", "corp-analytics", "eastus", "Basic", tags={"owner": "data-team"}),
    ]
    replica = resource("platform-shared", "rg-acrcontososhared",
                       "Microsoft.ContainerRegistry/registries/acrcontososhared/replications/northeurope",
                       "northeurope", {"provisioningState": "Succeeded", "regionEndpointEnabled": True,
                                       "status": {"displayStatus": "Ready"}, "zoneRedundancy": "Disabled"})
    ids = {r["name"]: r["id"] for r in registries}

    clusters = [
        # Private endpoint via peered hub, zone linked, direct AcrPull: every pair rule Pass.
        cluster("aks-payments-prod", "corp-payments", "westeurope", subnet=subnet_of(vnets["payments"]),
                tags={"owner": "team-payments", "env": "prod", "acr-pull-registries": "acrcontososhared"},
                egress_ips=[pips["aks-payments-prod"]["id"]]),
        # Custom role inherited from the registry's subscription; vnet-orders lacks the DNS link (004 Fail);
        # egress IP inside acrcontosoedge's ipRules (003 Pass, public); edge is in another region (008 Fail).
        cluster("aks-orders-prod", "corp-orders", "westeurope", subnet=subnet_of(vnets["orders"]).lower(),
                tags={"owner": "team-orders", "app": "orders",
                      "acr-pull-registries": "acrcontososhared.azurecr.io, acrcontosoedge"},
                egress_ips=[pips["aks-orders-prod"]["id"]]),
        # Egress through a firewall (UDR): 003 Unknown; a typo'd registry in the tag: Unknown pair.
        cluster("aks-online-web", "online-web", "North Europe", subnet=subnet_of(vnets["online"]),
                outbound="userDefinedRouting",
                tags={"owner": "team-web", "acr-pull-registries": "acrcontosoedge acrcontosomissing"}),
        # Service principal: 006 Fail, 001 Unknown (appId not mapped to an object id).
        cluster("aks-batch-dev", "online-web", "westeurope", subnet=None, service_principal=guid("app:batch-sp"),
                tags={"owner": "team-batch", "acr-pull-registries": "acrcontosoabac"},
                egress_ips=[pips["aks-batch-dev"]["id"]]),
        # Kubelet identity deleted from an in-scope subscription: 005 Fail. Paired only by its role assignment.
        cluster("aks-analytics", "corp-analytics", "eastus", subnet=None, tags={"owner": "data-team"},
                egress_ips=[pips["aks-analytics"]["id"]]),
        # Kubelet identity in a subscription outside the snapshot: 005 Unknown. AcrPull on an ABAC registry: 001 Fail.
        cluster("aks-ml-training", "corp-analytics", "westeurope", subnet=None, kubelet_sub=OUT_OF_SCOPE_SUB,
                tags={"owner": "ml-platform"}, egress_ips=[pips["aks-ml-training"]["id"]]),
        # Pull granted only to a group (001 Unknown); custom DNS servers (004 Unknown); replica in region (008 Pass).
        cluster("aks-orders-dr", "corp-orders", "northeurope", subnet=subnet_of(vnets["orders-dr"]),
                tags={"owner": "team-orders", "app": "orders"}, egress_ips=[pips["aks-orders-dr"]["id"]]),
        # Peering to the hub Disconnected and public access disabled: 003 Fail. Egress via a NAT gateway.
        cluster("aks-payments-staging", "corp-payments", "westeurope", subnet=subnet_of(vnets["payments-stg"]),
                outbound="userAssignedNATGateway",
                tags={"owner": "team-payments", "env": "staging", "acr-pull-registries": "acrcontososhared"}),
        # No role, egress IP outside the firewall, other region: 001, 003 and 008 Fail.
        cluster("aks-web-eastus", "online-web", "eastus", subnet=subnet_of(vnets["web-eus"]),
                tags={"owner": "team-web", "acr-pull-registries": ids["acrcontosoedge"]},
                egress_ips=[pips["aks-web-eastus"]["id"]]),
        # Service principal whose every credential expired: 012 Fail (014 NotApplicable). No Container Insights.
        cluster("aks-legacy-billing", "corp-payments", "westeurope", subnet=None, insights=False,
                service_principal=guid("app:billing-sp"), tags={"owner": "team-billing",
                                                                "acr-pull-registries": "acrcontosolegacy"},
                egress_ips=[pips["aks-legacy-billing"]["id"]]),
        # Service principal whose only secret expires ten days after the capture: 014 Fail, 012 Pass.
        cluster("aks-legacy-reports", "corp-analytics", "westeurope", subnet=None, insights=False,
                service_principal=guid("app:reports-sp"), tags={"owner": "team-reports",
                                                                "acr-pull-registries": "acrcontosolegacy"},
                egress_ips=[pips["aks-legacy-reports"]["id"]]),
    ]
    identities = [identity_row(c["name"], c["subscriptionId"], c["properties"]["nodeResourceGroup"], c["location"])
                  for c in clusters
                  if "identityProfile" in c["properties"] and c["name"] not in ("aks-analytics", "aks-ml-training")]

    def kubelet_of(name: str) -> str:
        return guid(f"kubelet:{name}")

    group = guid("group:acr-readers")
    rg_shared = rid("platform-shared", "rg-acrcontososhared", "x/y/z").rsplit("/providers/", 1)[0]
    assignments = [
        assignment(ids["acrcontososhared"], kubelet_of("aks-payments-prod"), "AcrPull"),
        assignment(f"/subscriptions/{SUB['platform-shared']}", kubelet_of("aks-orders-prod"), CUSTOM_ROLE[0]),
        assignment("/providers/Microsoft.Management/managementGroups/mg-platform", kubelet_of("aks-online-web"),
                   "AcrPull"),
        assignment(ids["acrcontosobasic"], kubelet_of("aks-analytics"), "AcrPull", short_form=True),
        assignment(ids["acrcontosoabac"], kubelet_of("aks-ml-training"), "AcrPull"),
        assignment(ids["acrcontosoabac"], kubelet_of("aks-orders-prod"), "Container Registry Repository Reader",
                   condition="((!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/read'}))"
                             " OR (@Request[Microsoft.ContainerRegistry/registries/repositories:name] "
                             "StringStartsWithIgnoreCase 'orders/'))"),
        assignment(rg_shared, group, "AcrPull", principal_type="Group"),
        assignment(rg_shared, kubelet_of("aks-payments-staging"), "AcrPush"),
        # Noise every tenant has.
        assignment(f"/subscriptions/{SUB['corp-payments']}", guid("user:alice"), "Owner", principal_type="User"),
        assignment("/providers/Microsoft.Management/managementGroups/mg-contoso", guid("group:secops"), "Reader",
                   principal_type="Group"),
        assignment(f"/subscriptions/{SUB['corp-analytics']}", kubelet_of("aks-analytics"), "Storage Blob Data Reader"),
    ]

    containers = [
        {"id": f"/providers/Microsoft.Management/managementGroups/{name}", "name": name,
         "type": "microsoft.management/managementgroups", "tenantId": TENANT,
         "properties": {"displayName": display, "details": {"parent": {"name": parent} if parent else None}}}
        for name, (display, parent) in MG_TREE.items()
    ] + [
        {"id": f"/subscriptions/{sub_id}", "name": f"contoso-{name}", "type": "microsoft.resources/subscriptions",
         "subscriptionId": sub_id, "tenantId": TENANT,
         "properties": {"state": "Enabled", "managementGroupAncestorsChain": chain(SUB_PARENT[name])}}
        for name, sub_id in SUB.items()
    ]
    network_rows = [hub, *vnets.values(), pe_shared, zone, *links, *pips.values(), nat_pip, nat_gateway]
    return {
        # Three shapes a snapshot may take: `az graph query -o json` output, a plain array, JSON Lines.
        "resourcecontainers.json": {"count": len(containers), "data": containers, "skip_token": None,
                                    "total_records": len(containers)},
        "resources.json": [*clusters, *registries, replica, *identities, *network_rows],
        "authorizationresources.jsonl": [*role_definitions(), *assignments],
        # What Resource Graph cannot show, as a live run collects it beyond Resource Graph.
        "deny_assignments.jsonl": deny_assignments(ids, clusters),
        "microsoft_graph.jsonl": graph_rows(group, kubelet_of),
        "container_insights.jsonl": container_insights(clusters, kubelet_of),
        "manifest.json": manifest(),
    }


def deny_assignments(ids: dict[str, str], clusters: list[dict]) -> list[dict]:
    """A managed application's deny assignment on the edge registry's resource group takes pull away from the
    online web cluster, although it holds AcrPull at the platform management group: 001 Fail (deny)."""
    scope = ids["acrcontosoedge"].rsplit("/providers/", 1)[0]
    name = guid("deny:edge-appliance")
    return [{"id": f"{scope}/providers/Microsoft.Authorization/denyAssignments/{name}", "name": name,
             "type": "microsoft.authorization/denyassignments", "properties": {
                 "denyAssignmentName": "Deny pulls outside the edge appliance",
                 "description": "Created by managed application contoso-edge-appliance",
                 "scope": scope, "doNotApplyToChildScopes": False,
                 "permissions": [{"actions": ["Microsoft.ContainerRegistry/registries/pull/read"], "notActions": [],
                                  "dataActions": [], "notDataActions": [], "condition": None,
                                  "conditionVersion": None}],
                 "principals": [{"id": guid("kubelet:aks-online-web"), "type": "ServicePrincipal",
                                 "displayName": "aks-online-web-agentpool"}],
                 "excludePrincipals": [], "isSystemProtected": True, "createdBy": "managed application",
                 "createdOn": "2026-05-04T10:00:00Z"}}]


def graph_rows(readers_group: str, kubelet_of) -> list[dict]:
    """Microsoft Graph's answers: group members (service principals only), service principals by appId and
    their applications' credential end dates (never secret values)."""
    sp_rows = [{"type": "microsoft.graph/serviceprincipals", "id": guid(f"sp:{name}"), "appId": guid(f"app:{name}-sp"),
                "displayName": f"{name}-sp", "servicePrincipalType": "Application"}
               for name in ("batch", "billing", "reports")]
    # A kubelet identity is a service principal too (type ManagedIdentity): this one is a member of acr-readers.
    sp_rows.append({"type": "microsoft.graph/serviceprincipals", "id": kubelet_of("aks-orders-dr"),
                    "appId": guid("client:aks-orders-dr"), "displayName": "aks-orders-dr-agentpool",
                    "servicePrincipalType": "ManagedIdentity"})
    applications = [
        {"type": "microsoft.graph/applications", "id": guid("application:batch"), "appId": guid("app:batch-sp"),
         "passwordCredentials": [{"keyId": guid("secret:batch"), "displayName": "aks",
                                  "startDateTime": "2026-06-30T00:00:00Z", "endDateTime": "2027-06-30T00:00:00Z"}],
         "keyCredentials": []},
        {"type": "microsoft.graph/applications", "id": guid("application:billing"), "appId": guid("app:billing-sp"),
         "passwordCredentials": [{"keyId": guid("secret:billing"), "displayName": "aks",
                                  "startDateTime": "2025-09-30T00:00:00Z", "endDateTime": "2026-09-30T00:00:00Z"}],
         "keyCredentials": [{"keyId": guid("cert:billing"), "displayName": "CN=billing", "type": "AsymmetricX509Cert",
                             "usage": "Verify", "startDateTime": "2025-10-15T00:00:00Z",
                             "endDateTime": "2026-10-15T00:00:00Z"}]},
        {"type": "microsoft.graph/applications", "id": guid("application:reports"), "appId": guid("app:reports-sp"),
         "passwordCredentials": [{"keyId": guid("secret:reports"), "displayName": "aks",
                                  "startDateTime": "2025-12-09T00:00:00Z", "endDateTime": "2026-12-09T00:00:00Z"}],
         "keyCredentials": []},
    ]
    groups = [
        # The ACR readers group holds the orders DR cluster's kubelet identity: its pair passes through the group.
        {"type": "microsoft.graph/groups", "id": readers_group, "displayName": "acr-readers",
         "transitiveMembers": [kubelet_of("aks-orders-dr")]},
        # SecOps holds people only (the pairs file also declares it: a declaration overrides Graph).
        {"type": "microsoft.graph/groups", "id": guid("group:secops"), "displayName": "secops-readers",
         "transitiveMembers": []},
    ]
    return [*sp_rows, *applications, *groups]


def _event(cluster_id: str, namespace: str, pod: str, image: str, detail: str, count: int, last: str) -> dict:
    return {"type": "containerinsights/kubeevents", "TimeGenerated": last, "ClusterId": cluster_id,
            "ClusterName": cluster_id.rsplit("/", 1)[-1], "Namespace": namespace, "Name": pod, "ObjectKind": "Pod",
            "Reason": "Failed", "KubeEventType": "Warning", "Count": count, "FirstSeen": "2026-11-29T01:10:00Z",
            "LastSeen": last, "Message": f'Failed to pull image "{image}": {detail}'}


def _running(cluster_id: str, image: str, seen: str = "2026-11-29T05:40:00Z") -> dict:
    host, _, rest = image.partition("/")
    name, _, tag = rest.partition(":")
    return {"type": "containerinsights/containerinventory", "TimeGenerated": seen, "_ResourceId": cluster_id,
            "Repository": host, "Image": name, "ImageTag": tag or "latest", "ContainerState": "Running",
            "ContainerHostname": f"{name.replace('/', '-')}-7d9f"}


def container_insights(clusters: list[dict], kubelet_of) -> list[dict]:
    """Container Insights rows (KubeEvents, ContainerInventory) as Log Analytics returns them: one access failure
    of each class, images that run, and pulls that fail for reasons that are not access problems."""
    cid = {c["name"]: c["id"] for c in clusters}
    at = "2026-11-29T05:30:00Z"
    oauth = "https://{0}.azurecr.io/oauth2/token?scope=repository%3A{1}%3Apull&service={0}.azurecr.io"
    return [
        # 403 with the client IP ACR reports, which is not the egress IP Resource Graph shows (52.170.8.9).
        _event(cid["aks-web-eastus"], "web", "frontend-5f7c9d-x2lq", "acrcontosoedge.azurecr.io/web/frontend:2.3.1",
               "rpc error: code = Unknown desc = Error response from daemon: Get "
               "https://acrcontosoedge.azurecr.io/v2/: denied: client with IP '52.170.8.10' is not allowed access. "
               "Refer https://aka.ms/acr/firewall to grant access.", 14, at),
        # 401: the kubelet identity was deleted (005 Fail).
        _event(cid["aks-analytics"], "etl", "loader-6b8d4-kq2mz", "acrcontosobasic.azurecr.io/etl/loader:1.8",
               "rpc error: code = Unknown desc = failed to pull and unpack image "
               '"acrcontosobasic.azurecr.io/etl/loader:1.8": failed to resolve reference '
               '"acrcontosobasic.azurecr.io/etl/loader:1.8": failed to authorize: failed to fetch oauth token: '
               "unexpected status: 401 Unauthorized", 22, at),
        # 401 although configuration grants pull: an ABAC condition limits the identity to orders/ repositories.
        _event(cid["aks-orders-prod"], "billing", "export-7c4f8-pp9s2", "acrcontosoabac.azurecr.io/billing/export:1.0",
               "rpc error: code = Unknown desc = failed to pull and unpack image "
               '"acrcontosoabac.azurecr.io/billing/export:1.0": failed to resolve reference '
               '"acrcontosoabac.azurecr.io/billing/export:1.0": failed to authorize: failed to fetch anonymous '
               f"token: unexpected status from GET request to {oauth.format('acrcontosoabac', 'billing%2Fexport')}: "
               "401 Unauthorized", 6, at),
        # No such host: the node VNet has no privatelink.azurecr.io link (004 Fail).
        _event(cid["aks-orders-prod"], "orders", "orders-api-59d7b-lk3vv", "acrcontososhared.azurecr.io/orders/api:4.2",
               "rpc error: code = Unknown desc = failed to pull and unpack image "
               '"acrcontososhared.azurecr.io/orders/api:4.2": failed to resolve reference '
               '"acrcontososhared.azurecr.io/orders/api:4.2": failed to do request: Head '
               '"https://acrcontososhared.azurecr.io/v2/orders/api/manifests/4.2": dial tcp: lookup '
               "acrcontososhared.azurecr.io on 10.2.0.10:53: no such host", 9, at),
        # Timeout over the disconnected peering (003 Fail).
        _event(cid["aks-payments-staging"], "payments", "ledger-6d5b7-zz8rt",
               "acrcontososhared.azurecr.io/payments/ledger:3.0",
               "rpc error: code = DeadlineExceeded desc = failed to pull and unpack image "
               '"acrcontososhared.azurecr.io/payments/ledger:3.0": failed to resolve reference '
               '"acrcontososhared.azurecr.io/payments/ledger:3.0": failed to do request: Head '
               '"https://acrcontososhared.azurecr.io/v2/payments/ledger/manifests/3.0": dial tcp 10.0.1.5:443: '
               "i/o timeout", 11, at),
        # A tag that does not exist: not an access problem (evidence only).
        _event(cid["aks-payments-prod"], "payments", "api-canary-8f9b7-2xkq",
               "acrcontososhared.azurecr.io/payments/api:9.9.9",
               "rpc error: code = NotFound desc = failed to pull and unpack image "
               '"acrcontososhared.azurecr.io/payments/api:9.9.9": failed to resolve reference '
               '"acrcontososhared.azurecr.io/payments/api:9.9.9": acrcontososhared.azurecr.io/payments/api:9.9.9: '
               "not found", 3, at),
        # Registry throttling: evidence only.
        _event(cid["aks-orders-dr"], "orders", "orders-api-59d7b-dr1", "acrcontososhared.azurecr.io/orders/api:4.2",
               "rpc error: code = Unknown desc = failed to pull and unpack image "
               '"acrcontososhared.azurecr.io/orders/api:4.2": failed to copy: httpReadSeeker: failed open: '
               "unexpected status code https://acrcontososhared.azurecr.io/v2/orders/api/blobs/sha256:1f2e: 429 Too "
               "Many Requests - Server message: toomanyrequests: Too many requests. Please visit "
               "https://aka.ms/acr/skus for more information.", 4, at),
        # An image built for another platform, from Docker Hub: Other, and not an ACR pair.
        _event(cid["aks-batch-dev"], "batch", "nightly-7b6c-9hq", "docker.io/library/nginx:1.27-arm64",
               "rpc error: code = NotFound desc = failed to pull and unpack image "
               '"docker.io/library/nginx:1.27-arm64": no match for platform in manifest: not found', 2, at),
        _running(cid["aks-payments-prod"], "acrcontososhared.azurecr.io/payments/api:9.4.0"),
        _running(cid["aks-payments-prod"], "acrcontosolegacy.azurecr.io/payments/batch:2.0"),
        _running(cid["aks-payments-prod"], "docker.io/library/redis:7.4"),
        _running(cid["aks-orders-dr"], "acrcontososhared.azurecr.io/orders/api:4.1"),
        # An image from the legacy registry runs on the training cluster, which nothing declares: an observed pair.
        _running(cid["aks-ml-training"], "acrcontosolegacy.azurecr.io/ml/base:3.1"),
        # From a registry of another tenant: counted, not paired.
        _running(cid["aks-ml-training"], "acrpartnermodels.azurecr.io/models/resnet:50"),
    ]


def manifest() -> dict:
    """What a captured snapshot's manifest says about the sources beyond Resource Graph, and when it was taken."""
    return {
        "tool": "acr-pull-auditor", "kind": "demo", "capturedAt": CAPTURED_AT,
        "coverage": {
            "permissions": {"GroupMember.Read.All": True, "Application.Read.All": True, "denyAssignments": True,
                            "containerInsights": True},
            "sources": {
                "denyAssignments": {"scopes": 1, "rows": 1, "gaps": []},
                "microsoftGraph": {"permissions": {"GroupMember.Read.All": True, "Application.Read.All": True},
                                   "gaps": []},
                "containerInsights": {"capturedAt": CAPTURED_AT, "lookback": "P1D", "workspaces": 1, "gaps": []},
            },
        },
    }


EXEMPTIONS = """\
# Demo exemptions (python -m auditors scan --demo --exemptions auditors/demo/exemptions.yaml).
# Approved, time-bound waivers: exempted findings keep their status, stop paging their owners and are counted
# apart. An exemption that expired exempts nothing and is reported by AKS-ACR-013.
exemptions:
  - id: EX-0042
    rules: [AKS-ACR-006]
    clusters: {name: "aks-batch-dev"}
    justification: "The nightly batch cluster stays on its service principal until the Q2 2027 migration"
    approvedBy: "secops@contoso.example"
    expiresOn: 2027-03-31
    ticket: CHG-1234
  - id: EX-0017
    rules: [AKS-ACR-007]
    registries: {name: "acrcontosoedge"}
    justification: "The edge appliance vendor integration signs in with the admin user"
    approvedBy: "secops@contoso.example"
    expiresOn: 2026-11-15
    ticket: CHG-0999
"""


def render(name: str, content) -> str:
    if name.endswith(".jsonl"):
        return "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in content)
    if isinstance(content, str):
        return content
    return json.dumps(content, indent=1) + "\n"


def files() -> dict[str, object]:
    """Every file of the demo folder."""
    return {**build(), "exemptions.yaml": EXEMPTIONS}


def main() -> int:
    for name, content in files().items():
        (DEMO_DIR / name).write_text(render(name, content), encoding="utf-8")
        print(f"wrote {DEMO_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
