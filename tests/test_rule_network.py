"""AKS-ACR-003 (network route) and AKS-ACR-004 (private DNS)."""

from auditors.pairing import ClusterSelector
from tests.helpers import demo_config, demo_rows, evaluate, row, verdict

ROUTE, DNS = "AKS-ACR-003", "AKS-ACR-004"


def run(rows, config=None):
    return evaluate(rows, config or demo_config())


def pair_with(config, cluster, registry):
    config.selectors.append(ClusterSelector("test", [registry], names=[cluster]))
    return config


def test_private_endpoint_in_directly_peered_hub_passes():
    finding = verdict(run(demo_rows()), ROUTE, "aks-payments-prod", "acrcontososhared")
    assert finding.Status == "Pass"
    assert finding.Evidence["route"] == "private"
    assert finding.Evidence["privatePaths"][0]["via"] == "peering"


def test_private_endpoint_in_the_node_vnet_itself_passes():
    rows = demo_rows()
    pe = row(rows, "pe-acrcontososhared")
    pe["properties"]["subnet"]["id"] = row(rows, "vnet-web-eus")["properties"]["subnets"][0]["id"]
    config = pair_with(demo_config(), "aks-web-eastus", "acrcontososhared")
    finding = verdict(run(rows, config), ROUTE, "aks-web-eastus", "acrcontososhared")
    assert finding.Status == "Pass"
    assert finding.Evidence["privatePaths"][0]["via"] == "same VNet"


def test_private_endpoint_in_unpeered_vnet_fails():
    config = pair_with(demo_config(), "aks-web-eastus", "acrcontososhared")
    finding = verdict(run(demo_rows(), config), ROUTE, "aks-web-eastus", "acrcontososhared")
    assert finding.Status == "Fail"
    assert "public network access is Disabled" in finding.Message
    assert "neither the node VNet" in finding.Message


def test_peering_not_connected_fails_and_names_the_state():
    finding = verdict(run(demo_rows()), ROUTE, "aks-payments-staging", "acrcontososhared")
    assert finding.Status == "Fail"
    assert "Disconnected" in finding.Message


def test_pending_private_endpoint_connection_is_no_route():
    rows = demo_rows()
    connection = row(rows, "acrcontososhared")["properties"]["privateEndpointConnections"][0]
    connection["properties"]["privateLinkServiceConnectionState"]["status"] = "Pending"
    finding = verdict(run(rows), ROUTE, "aks-payments-prod", "acrcontososhared")
    assert finding.Status == "Fail"
    assert "Pending" in finding.Message


def test_private_endpoint_found_from_its_own_row_when_registry_lists_no_connections():
    rows = demo_rows()
    row(rows, "acrcontososhared")["properties"]["privateEndpointConnections"] = []
    assert verdict(run(rows), ROUTE, "aks-payments-prod", "acrcontososhared").Status == "Pass"


def test_egress_ip_inside_an_ip_rule_cidr_passes_public():
    finding = verdict(run(demo_rows()), ROUTE, "aks-orders-prod", "acrcontosoedge")
    assert finding.Status == "Pass"
    assert finding.Evidence["route"] == "public"
    assert finding.Evidence["egressIps"] == ["20.50.20.7"]


def test_egress_ip_outside_every_rule_fails_with_the_ip_in_the_fix():
    finding = verdict(run(demo_rows()), ROUTE, "aks-web-eastus", "acrcontosoedge")
    assert finding.Status == "Fail"
    assert "52.170.8.9" in finding.Message
    assert "--ip-address 52.170.8.9" in finding.Remediation


def test_single_address_ip_rule_matches_exactly():
    rows = demo_rows()
    egress = next(r for r in rows if r["type"] == "microsoft.network/publicipaddresses"
                  and "aks-web-eastus" in r["id"])
    egress["properties"]["ipAddress"] = "198.51.100.7"
    assert verdict(run(rows), ROUTE, "aks-web-eastus", "acrcontosoedge").Status == "Pass"
    egress["properties"]["ipAddress"] = "198.51.100.8"
    assert verdict(run(rows), ROUTE, "aks-web-eastus", "acrcontosoedge").Status == "Fail"


def test_user_defined_routing_is_unknown():
    finding = verdict(run(demo_rows()), ROUTE, "aks-online-web", "acrcontosoedge")
    assert finding.Status == "Unknown"
    assert "userDefinedRouting" in finding.Message


def test_missing_public_ip_row_is_unknown_not_fail():
    rows = [r for r in demo_rows() if not (r["type"] == "microsoft.network/publicipaddresses"
                                           and "aks-web-eastus" in r["id"])]
    finding = verdict(run(rows), ROUTE, "aks-web-eastus", "acrcontosoedge")
    assert finding.Status == "Unknown"
    assert "not in the snapshot" in finding.Message


def test_nat_gateway_egress_is_resolved_through_subnet_and_gateway():
    config = pair_with(demo_config(), "aks-payments-staging", "acrcontosoedge")
    rows = demo_rows()
    finding = verdict(run(rows, config), ROUTE, "aks-payments-staging", "acrcontosoedge")
    assert finding.Status == "Fail"
    assert finding.Evidence["egressIps"] == ["20.50.30.9"]
    row(rows, "acrcontosoedge")["properties"]["networkRuleSet"]["ipRules"].append(
        {"action": "Allow", "value": "20.50.30.0/24"})
    finding = verdict(run(rows, config), ROUTE, "aks-payments-staging", "acrcontosoedge")
    assert finding.Status == "Pass"
    assert finding.Evidence["egressSource"] == "user-assigned NAT gateway"


def test_non_premium_registry_ignores_network_rules():
    rows = demo_rows()
    legacy = row(rows, "acrcontosolegacy")
    legacy["properties"]["networkRuleSet"] = {"defaultAction": "Deny", "ipRules": []}
    legacy["properties"]["publicNetworkAccess"] = "Disabled"
    finding = verdict(run(rows), ROUTE, "aks-payments-prod", "acrcontosolegacy")
    assert finding.Status == "Pass"
    assert "Standard registries have no network rules" in finding.Message


def test_node_vnet_absent_from_snapshot_is_unknown():
    rows = [r for r in demo_rows() if r.get("name") not in ("vnet-payments", "vnet-hub-weu")]
    finding = verdict(run(rows), ROUTE, "aks-payments-prod", "acrcontososhared")
    assert finding.Status == "Unknown"
    assert "is in the snapshot" in finding.Message


def test_peering_seen_only_from_the_endpoint_side_still_counts():
    rows = [r for r in demo_rows() if r.get("name") != "vnet-payments"]
    assert verdict(run(rows), ROUTE, "aks-payments-prod", "acrcontososhared").Status == "Pass"


def test_dns_zone_linked_to_node_vnet_passes():
    finding = verdict(run(demo_rows()), DNS, "aks-payments-prod", "acrcontososhared")
    assert finding.Status == "Pass"
    assert "is linked to" in finding.Message


def test_zone_linked_only_to_the_hub_fails_with_the_link_command():
    rows = demo_rows()
    finding = verdict(run(rows), DNS, "aks-orders-prod", "acrcontososhared")
    assert finding.Status == "Fail"
    vnet_id = row(rows, "vnet-orders")["id"].lower()
    assert f"--virtual-network {vnet_id}" in finding.Remediation
    assert "--resource-group rg-dns --zone-name privatelink.azurecr.io" in finding.Remediation


def test_custom_dns_servers_are_unknown_even_when_linked():
    finding = verdict(run(demo_rows()), DNS, "aks-orders-dr", "acrcontososhared")
    assert finding.Status == "Unknown"
    assert "10.0.0.4" in finding.Message


def test_dns_not_applicable_when_route_is_public_or_absent():
    findings = run(demo_rows())
    assert verdict(findings, DNS, "aks-orders-prod", "acrcontosoedge").Status == "NotApplicable"
    assert verdict(findings, DNS, "aks-payments-staging", "acrcontososhared").Status == "NotApplicable"


def test_no_dns_link_rows_collected_is_unknown():
    rows = [r for r in demo_rows() if r["type"] != "microsoft.network/privatednszones/virtualnetworklinks"]
    finding = verdict(run(rows), DNS, "aks-orders-prod", "acrcontososhared")
    assert finding.Status == "Unknown"
    assert "no private DNS zone virtual network links" in finding.Message


def test_private_endpoint_connection_without_state_is_unknown():
    rows = demo_rows()
    connection = row(rows, "acrcontososhared")["properties"]["privateEndpointConnections"][0]
    del connection["properties"]["privateLinkServiceConnectionState"]
    row(rows, "pe-acrcontososhared")["properties"]["privateLinkServiceConnections"][0]["properties"].pop(
        "privateLinkServiceConnectionState")
    finding = verdict(run(rows), ROUTE, "aks-payments-prod", "acrcontososhared")
    assert finding.Status == "Unknown" and "no connection state" in finding.Message


def test_dns_fail_message_says_when_the_public_route_is_only_unknown():
    rows = demo_rows()
    shared = row(rows, "acrcontososhared")
    shared["properties"]["publicNetworkAccess"] = "Enabled"  # firewall Deny; egress of UDR cluster unknown
    config = pair_with(demo_config(), "aks-online-web", "acrcontososhared")
    online = row(rows, "vnet-online")
    online["properties"]["virtualNetworkPeerings"] = row(rows, "vnet-orders")["properties"]["virtualNetworkPeerings"]
    finding = verdict(run(rows, config), DNS, "aks-online-web", "acrcontososhared")
    assert finding.Status == "Fail"
    assert "whether that admits it is unknown" in finding.Message


def test_private_endpoint_two_peering_hops_away_is_unknown_not_fail():
    rows = demo_rows()
    hub = row(rows, "vnet-hub-weu")
    shared = {**row(rows, "vnet-payments"), "name": "vnet-shared-services"}
    shared["id"] = shared["id"].replace("vnet-payments", "vnet-shared-services")
    shared["properties"] = {**shared["properties"], "subnets": [{
        "id": shared["id"] + "/subnets/snet-pe", "name": "snet-pe", "properties": {"addressPrefix": "10.9.0.0/24"}}]}
    rows.append(shared)  # a spoke for private endpoints, peered with the hub only
    hub["properties"]["virtualNetworkPeerings"].append({"name": "to-shared", "properties": {
        "remoteVirtualNetwork": {"id": shared["id"]}, "peeringState": "Connected", "allowVirtualNetworkAccess": True}})
    row(rows, "pe-acrcontososhared")["properties"]["subnet"]["id"] = shared["id"] + "/subnets/snet-pe"
    finding = verdict(run(rows), ROUTE, "aks-payments-prod", "acrcontososhared")
    assert finding.Status == "Unknown"
    assert "two peering hops" in finding.Message and "vnet-hub-weu" in finding.Message
