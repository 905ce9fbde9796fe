"""Network path from a cluster's nodes to a registry: egress IPs vs firewall, private endpoints, DNS.

Every function answers with what it could establish and, when the snapshot cannot tell, why not.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

from auditors.arm import norm_id, parent_id, resource_group_id
from auditors.model import ACR_PRIVATE_DNS_ZONE, T_DNS_LINK, T_PUBLIC_IP, Cluster, Inventory, Registry

OPEN, BLOCKED, UNKNOWN = "open", "blocked", "unknown"


@dataclass
class Egress:
    ips: list[str]
    source: str
    unknown: str = ""  # why the egress addresses cannot be fully determined


@dataclass
class PublicRoute:
    state: str
    reason: str
    outside_rules: list[str] = field(default_factory=list)


@dataclass
class EndpointPath:
    endpoint_id: str
    endpoint_vnet: str
    node_vnet: str
    via: str  # "same VNet" or "peering"


@dataclass
class PrivateRoute:
    paths: list[EndpointPath] = field(default_factory=list)
    unknowns: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    endpoints_considered: int = 0


def cluster_egress(cluster: Cluster, inventory: Inventory) -> Egress:
    outbound = (cluster.outbound_type or "loadBalancer").lower()
    if not cluster.has_properties:
        return Egress([], outbound, "the cluster row carries no properties")
    if outbound == "userdefinedrouting":
        return Egress([], outbound, "outbound type userDefinedRouting sends egress through a firewall or appliance "
                                    "whose public IPs Resource Graph does not relate to the cluster")
    if outbound == "none":
        return Egress([], outbound, "outbound type none: egress depends on network configuration outside AKS")
    if outbound == "loadbalancer":
        ip_ids, source = cluster.load_balancer_ip_ids, "load balancer effectiveOutboundIPs"
    elif outbound == "managednatgateway":
        ip_ids, source = cluster.managed_nat_ip_ids, "managed NAT gateway effectiveOutboundIPs"
    elif outbound == "userassignednatgateway":
        return _nat_gateway_egress(cluster, inventory)
    else:
        return Egress([], outbound, f"outbound type {cluster.outbound_type!r} is not understood")
    if not ip_ids:
        return Egress([], source, f"the cluster row lists no {source}")
    return _resolve_ips(ip_ids, source, inventory)


def _nat_gateway_egress(cluster: Cluster, inventory: Inventory) -> Egress:
    source = "user-assigned NAT gateway"
    ip_ids: list[str] = []
    if not cluster.node_subnet_ids:
        return Egress([], source, "the cluster row names no node subnet, so its NAT gateway is unknown")
    for subnet_key in cluster.node_subnet_ids:
        vnet = inventory.vnets.get(inventory.subnet_vnet.get(subnet_key, parent_id(subnet_key)))
        subnet = vnet.subnets.get(subnet_key) if vnet else None
        if subnet is None:
            return Egress([], source, f"node subnet {subnet_key} is not in the snapshot")
        gateway = inventory.nat_gateways.get(subnet.nat_gateway_key)
        if gateway is None:
            missing = subnet.nat_gateway_key or "(none attached to the subnet)"
            return Egress([], source, f"NAT gateway {missing} of subnet {subnet_key} is not in the snapshot")
        if gateway.has_prefixes:
            return Egress([], source, f"NAT gateway {gateway.id} uses public IP prefixes, not resolved here")
        ip_ids.extend(gateway.public_ip_keys)
    return _resolve_ips(ip_ids, source, inventory)


def _resolve_ips(ip_ids: list[str], source: str, inventory: Inventory) -> Egress:
    addresses = []
    for ip_id in ip_ids:
        address = inventory.public_ips.get(norm_id(ip_id))
        if not address:
            why = "not in the snapshot" if inventory.collected(T_PUBLIC_IP) else "not collected (no public IP rows)"
            if address == "":
                why = "has no ipAddress"
            return Egress(addresses, source, f"public IP {ip_id} is {why}")
        addresses.append(address)
    return Egress(addresses, source)


@lru_cache(maxsize=65536)
def _network(text: str):
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def ip_in_rules(address: str, rules: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any((net := _network(rule)) is not None and ip.version == net.version and ip in net for rule in rules)


def public_route(registry: Registry, egress: Egress) -> PublicRoute:
    if not registry.has_properties:
        return PublicRoute(UNKNOWN, "the registry row carries no properties, so its network settings are unknown")
    if not registry.sku:
        return PublicRoute(UNKNOWN, "the registry row has no SKU, and network rules apply only to Premium")
    if not registry.is_premium:
        return PublicRoute(OPEN, f"{registry.sku or 'non-Premium'} registries have no network rules; "
                                 "the public endpoint accepts every network")
    if (registry.public_network_access or "Enabled").lower() == "disabled":
        return PublicRoute(BLOCKED, "public network access is Disabled")
    if (registry.default_action or "Allow").lower() == "allow":
        return PublicRoute(OPEN, "public network access is Enabled with default action Allow")
    if egress.unknown:
        return PublicRoute(UNKNOWN, f"the firewall denies by default and the cluster's egress IPs are unknown: "
                                    f"{egress.unknown}")
    outside = [ip for ip in egress.ips if not ip_in_rules(ip, registry.ip_rules)]
    if outside:
        return PublicRoute(BLOCKED, f"the firewall denies by default and egress IP(s) {', '.join(outside)} "
                                    "match no ipRules entry", outside)
    return PublicRoute(OPEN, f"every egress IP ({', '.join(egress.ips)}) is inside an ipRules entry")


def node_vnets(cluster: Cluster, inventory: Inventory) -> tuple[list[str], str]:
    """VNets the cluster's nodes live in, or ([], reason)."""
    if cluster.node_subnet_ids:
        keys = [inventory.subnet_vnet.get(s) or parent_id(s) for s in cluster.node_subnet_ids]
        return sorted(set(keys)), ""
    if cluster.node_resource_group:
        group = resource_group_id(f"/subscriptions/{cluster.subscription_id}/resourcegroups/"
                                  f"{cluster.node_resource_group}")
        managed = inventory.vnets_by_group.get(group.lower(), [])
        if managed:
            return sorted(managed), ""
    return [], "the cluster row names no node subnet and no AKS-managed VNet was found in its node resource group"


def _peering_state(inventory: Inventory, from_vnet: str, to_vnet: str) -> str | None:
    vnet = inventory.vnets.get(from_vnet)
    if vnet is None:
        return None
    for peering in vnet.peerings:
        if peering.remote_vnet_key == to_vnet:
            return peering.state if peering.allow_access else f"{peering.state} (virtual network access blocked)"
    return ""


def private_route(registry: Registry, vnets: list[str], inventory: Inventory) -> PrivateRoute:
    route = PrivateRoute()
    if registry.sku and not registry.is_premium:  # private endpoints need Premium
        return route
    statuses = {c.private_endpoint_key: c.status for c in registry.connections}
    for endpoint_key in inventory.endpoints_by_registry.get(registry.key, ()):
        endpoint = inventory.private_endpoints[endpoint_key]
        statuses.setdefault(endpoint_key, endpoint.targets.get(registry.key, ""))
    for endpoint_key, status in sorted(statuses.items()):
        route.endpoints_considered += 1
        if not status:
            route.unknowns.append(f"private endpoint {endpoint_key} has no connection state in the snapshot")
            continue
        if status.lower() != "approved":
            route.blockers.append(f"private endpoint {endpoint_key} connection is {status}, not Approved")
            continue
        endpoint = inventory.private_endpoints.get(endpoint_key)
        if endpoint is None or not endpoint.subnet_key:
            route.unknowns.append(f"private endpoint {endpoint_key} is not in the snapshot, so its VNet is unknown")
            continue
        endpoint_vnet = inventory.subnet_vnet.get(endpoint.subnet_key) or parent_id(endpoint.subnet_key)
        for node_vnet in vnets:
            _connect(route, inventory, endpoint.id, endpoint_vnet, node_vnet)
    return route


def _connect(route: PrivateRoute, inventory: Inventory, endpoint_id: str, endpoint_vnet: str, node_vnet: str):
    if endpoint_vnet == node_vnet:
        route.paths.append(EndpointPath(endpoint_id, endpoint_vnet, node_vnet, "same VNet"))
        return
    state = _peering_state(inventory, node_vnet, endpoint_vnet)
    if state is None:  # node VNet row absent: the remote side's view of the peering is the next best evidence
        state = _peering_state(inventory, endpoint_vnet, node_vnet)
    if state is None:
        route.unknowns.append(f"neither node VNet {node_vnet} nor endpoint VNet {endpoint_vnet} is in the snapshot")
    elif state.lower() == "connected":
        route.paths.append(EndpointPath(endpoint_id, endpoint_vnet, node_vnet, "peering"))
    elif state:
        route.blockers.append(f"peering {node_vnet} -> {endpoint_vnet} is {state}, not Connected")
    elif hub := _hub_between(inventory, node_vnet, endpoint_vnet):
        route.unknowns.append(f"private endpoint {endpoint_id} is in VNet {endpoint_vnet}, two peering hops from the "
                              f"node VNet through {hub}; whether traffic transits depends on routes through a firewall "
                              "or appliance there, which Resource Graph does not show")
    elif endpoint_vnet not in inventory.vnets:
        route.unknowns.append(f"endpoint VNet {endpoint_vnet} is not in the snapshot, so a route through a hub "
                              "cannot be ruled out")
    else:
        route.blockers.append(f"private endpoint {endpoint_id} is in VNet {endpoint_vnet}, which is neither the node "
                              f"VNet {node_vnet} nor peered with it, directly or through a shared hub")


def _connected_neighbours(inventory: Inventory, vnet_key: str) -> frozenset[str]:
    known = inventory.connected_peers.get(vnet_key)  # asked for every pair through a hub: worked out once
    if known is None:
        vnet = inventory.vnets.get(vnet_key)
        known = inventory.connected_peers[vnet_key] = frozenset(
            p.remote_vnet_key for p in vnet.peerings if p.allow_access and p.state.lower() == "connected"
        ) if vnet is not None else frozenset()
    return known


def _hub_between(inventory: Inventory, node_vnet: str, endpoint_vnet: str) -> str | None:
    """A VNet both are peered with (hub and spoke, or a Virtual WAN hub), seen from either side."""
    far = _connected_neighbours(inventory, endpoint_vnet)
    for hub in sorted(_connected_neighbours(inventory, node_vnet)):
        if hub in far or endpoint_vnet in _connected_neighbours(inventory, hub):
            return hub
    return None


@dataclass
class DnsVerdict:
    state: str  # "linked", "not linked", "unknown"
    reason: str
    vnet: str


def private_dns(node_vnet: str, inventory: Inventory) -> DnsVerdict:
    vnet = inventory.vnets.get(node_vnet)
    if vnet is not None and vnet.dns_servers:
        return DnsVerdict(UNKNOWN, f"VNet {node_vnet} uses custom DNS servers ({', '.join(vnet.dns_servers)}); "
                                   "whether they forward privatelink.azurecr.io to Azure DNS is not visible", node_vnet)
    links = [link for link in inventory.dns_links_by_vnet.get(node_vnet, ()) if link.zone_name == ACR_PRIVATE_DNS_ZONE]
    if links:
        return DnsVerdict("linked", f"zone {ACR_PRIVATE_DNS_ZONE} is linked to {node_vnet} ({links[0].id})", node_vnet)
    if vnet is None:
        return DnsVerdict(UNKNOWN, f"node VNet {node_vnet} is not in the snapshot, so its DNS settings are unknown",
                          node_vnet)
    if not inventory.collected(T_DNS_LINK):
        return DnsVerdict(UNKNOWN, "the snapshot holds no private DNS zone virtual network links", node_vnet)
    return DnsVerdict("not linked", f"no {ACR_PRIVATE_DNS_ZONE} zone is linked to node VNet {node_vnet}; its nodes "
                                    "resolve the registry to its public address", node_vnet)
