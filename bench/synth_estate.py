"""Seeded synthetic Azure tenant in Azure Resource Graph (ARG) row shape.

Benchmark fixture for the AKS -> ACR pull-access auditor.  Writes JSON Lines files
(one ARG row per line) into an output directory:

    subscriptions.jsonl     management groups + subscriptions   (resourcecontainers)
    clusters.jsonl          AKS managed clusters                 (resources)
    registries.jsonl        container registries + replications (resources)
    identities.jsonl        kubelet user-assigned identities     (resources)
    network.jsonl           vnets, public IPs, NAT gateways, private endpoints,
                            private DNS zone + vnet links        (resources)
    role_definitions.jsonl  built-in + custom role definitions   (authorizationresources)
    role_assignments.jsonl  role assignments                     (authorizationresources)
    deny_assignments.jsonl  deny assignments (Resource Manager)
    microsoft_graph.jsonl   groups with transitive members, service principals and
                            applications of service-principal clusters (Microsoft Graph)
    container_insights.jsonl  KubeEvents pull failures and ContainerInventory images
    manifest.json           capture time and what each source was allowed to read

Everything is derived from ``random.Random(seed)`` so a given seed always yields
byte-identical output.  Role assignments are streamed: only the few cluster-related
assignments are held in memory, the (default one million) noise rows are written as
they are generated from prebuilt string templates.

Usage:
    python bench/synth_estate.py OUT_DIR [--clusters N] [--registries N]
        [--role-assignments N] [--subscriptions N] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

TENANT_ID = "5b3f1c2e-8d4a-4e6b-9c7f-1a2b3c4d5e6f"
REGIONS = (
    "eastus", "eastus2", "westus2", "centralus",
    "northeurope", "westeurope", "uksouth", "southeastasia",
)
CREATED_ON = "2025-01-01T00:00:00Z"

# Management-group tree: (name, displayName, parent name or None).
MANAGEMENT_GROUPS = (
    (TENANT_ID, "Tenant Root Group", None),
    ("mg-platform", "Platform", TENANT_ID),
    ("mg-landingzones", "Landing zones", TENANT_ID),
    ("mg-corp", "Corp", "mg-landingzones"),
    ("mg-online", "Online", "mg-landingzones"),
)
MG_PREFIX = "/providers/Microsoft.Management/managementGroups/"
RD_PREFIX = "/providers/Microsoft.Authorization/roleDefinitions/"
RA_INFIX = "/providers/Microsoft.Authorization/roleAssignments/"
BUILTIN_RD_PREFIX = "/providers/Microsoft.Authorization/RoleDefinitions/"  # as ARG spells it

# Well-known built-in role definition GUIDs.
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
ACR_PUSH = "8311e382-0749-4cb8-b61a-304f252e45ec"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
REPO_READER = "b93aa761-3e63-49ed-ac28-beffa264f7ac"

ACR_P = "Microsoft.ContainerRegistry/registries"
KEY_BUILTINS = (
    # (roleName, guid, actions, notActions, dataActions, notDataActions)
    ("AcrPull", ACR_PULL, [f"{ACR_P}/pull/read"], [], [], []),
    ("AcrPush", ACR_PUSH, [f"{ACR_P}/pull/read", f"{ACR_P}/push/write"], [], [], []),
    ("Owner", OWNER, ["*"], [], [], []),
    ("Contributor", CONTRIBUTOR, ["*"], [
        "Microsoft.Authorization/*/Delete",
        "Microsoft.Authorization/*/Write",
        "Microsoft.Authorization/elevateAccess/Action",
    ], [], []),
    ("Reader", READER, ["*/read"], [], [], []),
    ("Container Registry Repository Reader", REPO_READER, [], [], [
        f"{ACR_P}/repositories/content/read",
        f"{ACR_P}/repositories/metadata/read",
    ], []),
)

# Custom roles touching ACR: (roleName, actions, notActions, dataActions).  Some grant
# pull (wildcards, lower-case spelling), some deliberately do not.
ACR_CUSTOM_TEMPLATES = (
    ("ACR Image Puller", [f"{ACR_P}/pull/read"], [], []),
    ("ACR Read All", ["Microsoft.ContainerRegistry/*/read"], [], []),
    ("ACR Registry Operator", [f"{ACR_P}/*"], [], []),
    ("ACR Manager (no pull)", [f"{ACR_P}/*"], [f"{ACR_P}/pull/read"], []),
    ("ACR Metadata Viewer", [f"{ACR_P}/read"], [], []),
    ("Platform Deployer", ["Microsoft.Resources/deployments/*", f"{ACR_P}/*/read"], [], []),
    ("ACR Repository Content Reader", [], [], [f"{ACR_P}/repositories/content/read"]),
    ("ACR Pusher", [f"{ACR_P}/push/write", f"{ACR_P}/pull/read"], [], []),
    ("ACR Read All (legacy)", ["microsoft.containerregistry/*/read"], [], []),
    ("Registry Admin", ["Microsoft.ContainerRegistry/*"], [], []),
)

# Unrelated services for noise roles: (display name, resource type prefix).
NOISE_SERVICES = (
    ("Storage Account", "Microsoft.Storage/storageAccounts"),
    ("Virtual Machine", "Microsoft.Compute/virtualMachines"),
    ("Key Vault", "Microsoft.KeyVault/vaults"),
    ("SQL Server", "Microsoft.Sql/servers"),
    ("Website", "Microsoft.Web/sites"),
    ("Application Insights", "Microsoft.Insights/components"),
    ("Cosmos DB Account", "Microsoft.DocumentDB/databaseAccounts"),
    ("Event Hubs", "Microsoft.EventHub/namespaces"),
    ("Service Bus", "Microsoft.ServiceBus/namespaces"),
    ("Log Analytics", "Microsoft.OperationalInsights/workspaces"),
    ("Automation", "Microsoft.Automation/automationAccounts"),
    ("Search Service", "Microsoft.Search/searchServices"),
    ("Data Factory", "Microsoft.DataFactory/factories"),
    ("Redis Cache", "Microsoft.Cache/redis"),
    ("Load Balancer", "Microsoft.Network/loadBalancers"),
    ("DNS Zone", "Microsoft.Network/dnsZones"),
    ("Backup", "Microsoft.RecoveryServices/vaults"),
)
NOISE_VERBS = ("Reader", "Contributor", "Operator", "Data Reader", "Data Owner")

ABAC_CONDITION = (
    "((!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/read'})) OR "
    "(@Request[Microsoft.ContainerRegistry/registries/repositories:name] "
    "StringStartsWithIgnoreCase 'team/'))"
)

# Role-assignment row template; every interpolated value is a plain ASCII token (GUIDs,
# ARM ids, fixed words), so no JSON escaping is needed.  Key order matches json.dumps of
# the equivalent dict.
RA_TEMPLATE = (
    '{"id":"%s' + RA_INFIX + '%s","name":"%s","type":"microsoft.authorization/roleassignments",'
    '"subscriptionId":"%s","properties":{"scope":"%s","principalId":"%s","principalType":"%s",'
    '"roleDefinitionId":"%s","condition":null,"createdOn":"' + CREATED_ON + '"}}\n'
)

# UUID version-4 / RFC 4122 variant bits, applied to 128 random bits from the seeded rng.
_V4_MASK = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_V4_BITS = (0x4 << 76) | (0x2 << 62)

_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # == json.dumps(row, separators=...)

FILES = (
    "subscriptions", "clusters", "registries", "identities",
    "network", "role_definitions", "role_assignments",
    "deny_assignments", "microsoft_graph", "container_insights",
)
CAPTURED_AT = "2026-11-29T06:00:00Z"
# Image-pull failure messages as containerd reports them, one per access class plus one that is not about access.
PULL_FAILURES = (
    'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": failed to resolve reference '
    '"{image}": failed to authorize: failed to fetch oauth token: unexpected status: 401 Unauthorized',
    "rpc error: code = Unknown desc = Error response from daemon: Get https://{host}/v2/: denied: client with IP "
    "'{ip}' is not allowed access. Refer https://aka.ms/acr/firewall to grant access.",
    'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": failed to resolve reference '
    '"{image}": failed to do request: Head "https://{host}/v2/app/manifests/1.0": dial tcp: lookup {host} on '
    "10.0.0.10:53: no such host",
    'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to resolve reference '
    '"{image}": {image}: not found',
)


class _Sink:
    """Buffered JSON Lines writer that counts rows."""

    __slots__ = ("f", "n")

    def __init__(self, path: Path) -> None:
        self.f = open(path, "w", encoding="utf-8", buffering=1 << 20)  # noqa: SIM115 - closed by generate()
        self.n = 0

    def row(self, obj: dict) -> None:
        self.f.write(_ENCODE(obj) + "\n")
        self.n += 1

    def close(self) -> None:
        self.f.close()


class _Registry:
    __slots__ = (
        "abac", "deny", "id", "idx", "login", "mg_chain",
        "name", "pe_id", "region", "rg", "rules", "sub",
    )


class _Spoke:
    __slots__ = (
        "disconnected", "dns", "hub_side", "id", "linked", "n", "name",
        "nat_id", "nat_pip_id", "prefix", "region", "rg", "sub", "subnet_id",
    )


def _ip_str(v: int) -> str:
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


def generate(
    out_dir: str | Path,
    *,
    clusters: int = 20000,
    registries: int = 5000,
    role_assignments: int = 1_000_000,
    subscriptions: int = 2000,
    seed: int = 42,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Write the synthetic estate into ``out_dir``; return rows written per file stem."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sinks = {name: _Sink(out / f"{name}.jsonl") for name in FILES}
    try:
        _Generator(sinks, seed, progress).run(
            max(1, subscriptions), max(0, registries), max(0, clusters), max(0, role_assignments)
        )
    finally:
        for s in sinks.values():
            s.close()
    granted = {"GroupMember.Read.All": True, "Application.Read.All": True}
    (out / "manifest.json").write_text(json.dumps({
        "tool": "synth_estate", "kind": "synthetic", "capturedAt": CAPTURED_AT,
        "coverage": {"permissions": {**granted, "denyAssignments": True, "containerInsights": True}, "sources": {
            "denyAssignments": {"rows": sinks["deny_assignments"].n, "gaps": []},
            "microsoftGraph": {"permissions": granted, "gaps": []},
            "containerInsights": {"capturedAt": CAPTURED_AT, "lookback": "P1D", "workspaces": len(REGIONS),
                                  "gaps": []}}},
    }, indent=1) + "\n")
    return {name: s.n for name, s in sinks.items()}


class _Generator:
    def __init__(self, sinks: dict[str, _Sink], seed: int, progress) -> None:
        self.sinks = sinks
        self.rng = random.Random(seed)
        self.extra = random.Random(seed + 1)  # for the sources beyond Resource Graph, so the rows above stay put
        self.rnd = self.rng.random
        self.progress = progress or (lambda _msg: None)
        self.used_ips: set[int] = set()
        self.all_rules: list[tuple[int, int]] = []  # (base ip, prefix) of every ipRule emitted
        self.special: list[str] = []  # cluster-related role assignment lines (few)

    # ------------------------------------------------------------------ helpers
    def guid(self) -> str:
        h = "%032x" % ((self.rng.getrandbits(128) & _V4_MASK) | _V4_BITS)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def pick(self, seq):
        return seq[int(self.rnd() * len(seq))]

    def ref(self, arm_id: str) -> str:
        """A reference to ``arm_id``; ~10% spelled with lower-case ``resourcegroups``."""
        if self.rnd() < 0.10:
            return arm_id.replace("/resourceGroups/", "/resourcegroups/", 1)
        return arm_id

    def egress_ip(self, candidate_rules: list[tuple[int, int]]) -> str:
        """A unique public IPv4; ~half fall inside some registry ipRule (preferring the
        cluster's own registries' rules), the rest in 20.128.0.0/9 which no rule covers."""
        rnd = self.rnd
        if self.all_rules and rnd() < 0.5:
            for attempt in range(10):
                pool = candidate_rules if candidate_rules and attempt < 5 else self.all_rules
                base, prefix = pool[int(rnd() * len(pool))]
                v = base if prefix == 32 else base + 1 + int(rnd() * ((1 << (32 - prefix)) - 2))
                if v not in self.used_ips:
                    self.used_ips.add(v)
                    return _ip_str(v)
        while True:
            v = (20 << 24) | ((128 + int(rnd() * 127)) << 16) | (int(rnd() * 256) << 8)
            v |= 1 + int(rnd() * 254)
            if v not in self.used_ips:
                self.used_ips.add(v)
                return _ip_str(v)

    def pip_row(self, pip_id: str, name: str, rg: str, sub: str, region: str, ip: str) -> dict:
        return {
            "id": pip_id, "name": name, "type": "microsoft.network/publicipaddresses",
            "location": region, "resourceGroup": rg, "subscriptionId": sub, "tags": {},
            "properties": {
                "ipAddress": ip, "publicIPAddressVersion": "IPv4",
                "publicIPAllocationMethod": "Static",
            },
        }

    def assignment(self, scope: str, sub: str, principal: str, ptype: str, role_guid: str,
                   provider_form: bool = False, condition: str | None = None) -> str:
        g = self.guid()
        tenant_form = provider_form or not sub
        rd = RD_PREFIX + role_guid if tenant_form else f"/subscriptions/{sub}{RD_PREFIX}{role_guid}"
        props = {
            "scope": scope, "principalId": principal, "principalType": ptype,
            "roleDefinitionId": rd, "condition": condition,
        }
        if condition is not None:
            props["conditionVersion"] = "2.0"
        props["createdOn"] = CREATED_ON
        return _ENCODE({
            "id": scope + RA_INFIX + g, "name": g, "type": "microsoft.authorization/roleassignments",
            "subscriptionId": sub, "properties": props,
        }) + "\n"

    # ------------------------------------------------------------------ phases
    def run(self, n_subs: int, n_reg: int, n_clusters: int, n_ra: int) -> None:
        self.gen_subscriptions(n_subs)
        self.progress(f"subscriptions: {n_subs}")
        self.gen_role_definitions()
        self.progress("role definitions done")
        self.gen_registries(n_reg)
        self.progress(f"registries: {n_reg}")
        self.gen_network_plan(n_clusters)
        self.gen_private_endpoints()
        self.progress(f"network plan: {len(self.spokes)} spokes")
        self.gen_clusters(n_clusters)
        self.progress(f"clusters: {n_clusters}")
        self.gen_role_assignments(n_ra)
        self.gen_beyond_resource_graph()
        self.progress("deny assignments, Microsoft Graph and Container Insights done")

    def gen_subscriptions(self, n_subs: int) -> None:
        rnd, sink = self.rnd, self.sinks["subscriptions"]
        parents = {name: parent for name, _d, parent in MANAGEMENT_GROUPS}
        display = {name: d for name, d, _p in MANAGEMENT_GROUPS}
        chains: dict[str, list[str]] = {}
        for name, _d, _p in MANAGEMENT_GROUPS:
            chain, cur = [], name
            while cur is not None:
                chain.append(cur)
                cur = parents[cur]
            chains[name] = chain
        for name, disp, parent in MANAGEMENT_GROUPS:
            props: dict = {"displayName": disp}
            if parent is not None:
                props["details"] = {"parent": {"id": MG_PREFIX + parent, "name": parent}}
            sink.row({
                "id": MG_PREFIX + name, "name": name,
                "type": "microsoft.management/managementgroups", "properties": props,
            })

        self.subs = [self.guid() for _ in range(n_subs)]
        n_platform = max(1, n_subs // 100)
        self.platform_subs = self.subs[:n_platform]
        self.lz_subs = self.subs[n_platform:] or self.subs
        self.conn_sub = self.subs[0]
        self.dns_sub = self.subs[1] if n_platform > 1 else self.subs[0]
        self.sub_chain: dict[str, list[str]] = {}
        for i, sub in enumerate(self.subs):
            if i < n_platform:
                mg = "mg-platform"
            else:
                r = rnd()
                mg = TENANT_ID if r < 0.01 else ("mg-corp" if r < 0.60 else "mg-online")
            self.sub_chain[sub] = chains[mg]
            sink.row({
                "id": f"/subscriptions/{sub}", "name": f"sub-{i + 1:04d}",
                "type": "microsoft.resources/subscriptions", "subscriptionId": sub,
                "tenantId": TENANT_ID,
                "properties": {
                    "state": "Enabled",
                    "managementGroupAncestorsChain": [
                        {"name": m, "displayName": display[m]} for m in chains[mg]
                    ],
                },
            })

    def gen_role_definitions(self) -> None:
        sink, rnd = self.sinks["role_definitions"], self.rnd

        def perms(actions, not_actions, data_actions, not_data_actions):
            return [{
                "actions": actions, "notActions": not_actions,
                "dataActions": data_actions, "notDataActions": not_data_actions,
            }]

        for role_name, g, a, na, da, nda in KEY_BUILTINS:
            sink.row({
                "id": BUILTIN_RD_PREFIX + g, "name": g,
                "type": "microsoft.authorization/roledefinitions", "subscriptionId": "",
                "properties": {
                    "roleName": role_name, "type": "BuiltInRole",
                    "permissions": perms(a, na, da, nda), "assignableScopes": ["/"],
                },
            })

        self.noise_roles: list[str] = []
        n_svc, n_verb = len(NOISE_SERVICES), len(NOISE_VERBS)
        for i in range(200):
            svc, prefix = NOISE_SERVICES[i % n_svc]
            verb = NOISE_VERBS[(i // n_svc) % n_verb]
            rep = i // (n_svc * n_verb)
            role_name = f"{svc} {verb}" + (f" (Preview {rep})" if rep else "")
            if verb == "Reader":
                p = perms([f"{prefix}/read", "Microsoft.Resources/subscriptions/resourceGroups/read"],
                          [], [], [])
            elif verb == "Contributor":
                p = perms([f"{prefix}/*", "Microsoft.Insights/alertRules/*"], [], [], [])
            elif verb == "Operator":
                p = perms([f"{prefix}/read", f"{prefix}/*/action"], [f"{prefix}/delete"], [], [])
            elif verb == "Data Reader":
                p = perms([f"{prefix}/read"], [], [f"{prefix}/*/read"], [])
            else:
                p = perms([f"{prefix}/*"], [], [f"{prefix}/*"], [f"{prefix}/*/delete"])
            g = self.guid()
            self.noise_roles.append(g)
            sink.row({
                "id": BUILTIN_RD_PREFIX + g, "name": g,
                "type": "microsoft.authorization/roledefinitions", "subscriptionId": "",
                "properties": {
                    "roleName": role_name, "type": "BuiltInRole", "permissions": p,
                    "assignableScopes": ["/"],
                },
            })

        # ~50 custom roles: the ACR-related ones are defined in a platform subscription and
        # assignable across landing zones; the rest are sub-local noise.
        self.acr_custom: list[str] = []
        self.noise_custom: list[tuple[str, str]] = []  # (guid, defining subscription)
        def_sub = self.platform_subs[0]
        for role_name, a, na, da in ACR_CUSTOM_TEMPLATES:
            g = self.guid()
            self.acr_custom.append(g)
            sink.row({
                "id": f"/subscriptions/{def_sub}{RD_PREFIX}{g}", "name": g,
                "type": "microsoft.authorization/roledefinitions", "subscriptionId": def_sub,
                "properties": {
                    "roleName": role_name, "type": "CustomRole", "permissions": perms(a, na, da, []),
                    "assignableScopes": [f"/subscriptions/{s}" for s in self.platform_subs]
                    + [MG_PREFIX + "mg-landingzones"],
                },
            })
        for i in range(40):
            svc, prefix = NOISE_SERVICES[int(rnd() * n_svc)]
            sub = self.pick(self.subs)
            g = self.guid()
            self.noise_custom.append((g, sub))
            sink.row({
                "id": f"/subscriptions/{sub}{RD_PREFIX}{g}", "name": g,
                "type": "microsoft.authorization/roledefinitions", "subscriptionId": sub,
                "properties": {
                    "roleName": f"Custom {svc} Operator {i + 1:02d}", "type": "CustomRole",
                    "permissions": perms([f"{prefix}/read", f"{prefix}/*/action"], [], [], []),
                    "assignableScopes": [f"/subscriptions/{sub}"],
                },
            })

    def gen_registries(self, n_reg: int) -> None:
        rnd, rng, sink = self.rnd, self.rng, self.sinks["registries"]
        # Pool of /24 blocks inside 20.1.0.0-20.99.255.255 used for registry ipRules.
        n_blocks = min(20000, max(16, n_reg // 4))
        seen_blocks: set[int] = set()
        blocks: list[int] = []
        while len(blocks) < n_blocks:
            b = (20 << 24) | ((1 + int(rnd() * 99)) << 16) | (int(rnd() * 256) << 8)
            if b not in seen_blocks:
                seen_blocks.add(b)
                blocks.append(b)

        names: set[str] = set()
        self.reg_names = names
        self.regs: list[_Registry] = []
        self.regs_by_sub: dict[str, list[_Registry]] = {}
        for i in range(n_reg):
            r = _Registry()
            r.idx = i
            r.sub = self.pick(self.platform_subs) if rnd() < 0.15 else self.pick(self.lz_subs)
            r.rg = f"rg-acr-{1 + int(rnd() * 3)}"
            while True:
                name = f"acr{rng.getrandbits(24):06x}"
                if name not in names:
                    names.add(name)
                    break
            r.name = name
            r.login = f"{name}.azurecr.io"
            r.region = self.pick(REGIONS)
            r.id = (f"/subscriptions/{r.sub}/resourceGroups/{r.rg}"
                    f"/providers/Microsoft.ContainerRegistry/registries/{name}")
            r.mg_chain = self.sub_chain[r.sub]
            x = rnd()
            sku = "Basic" if x < 0.20 else ("Standard" if x < 0.50 else "Premium")
            premium = sku == "Premium"
            admin = rnd() < 0.10
            anon = sku != "Basic" and rnd() < 0.05
            r.abac = rnd() < 0.05
            public = "Enabled"
            has_pe = False
            r.deny = False
            r.rules = []
            ip_rules: list[dict] = []
            if premium:
                if rnd() < 0.20:
                    public, has_pe = "Disabled", True
                elif rnd() < 0.15:
                    has_pe = True
                if rnd() < 0.50:
                    r.deny = True
                    if rnd() < 0.90:
                        for _ in range(1 + int(rnd() * 3)):
                            base = self.pick(blocks)
                            y = rnd()
                            if y < 0.80:
                                prefix, value = 24, f"{_ip_str(base)}/24"
                            elif y < 0.90:
                                base += 1 + int(rnd() * 254)
                                prefix, value = 32, _ip_str(base)
                            else:
                                base &= 0xFFFF0000
                                prefix, value = 16, f"{_ip_str(base)}/16"
                            r.rules.append((base, prefix))
                            ip_rules.append({"action": "Allow", "value": value})
                        self.all_rules.extend(r.rules)
            pecs: list[dict] = []
            r.pe_id = None
            if has_pe:
                r.pe_id = (f"/subscriptions/{self.conn_sub}/resourceGroups/rg-hub-{r.region}"
                           f"/providers/Microsoft.Network/privateEndpoints/pe-{name}")
                pecs.append({
                    "id": f"{r.id}/privateEndpointConnections/pec1",
                    "properties": {
                        "privateEndpoint": {"id": self.ref(r.pe_id)},
                        "privateLinkServiceConnectionState": {"status": "Approved"},
                    },
                })
            sink.row({
                "id": r.id, "name": name, "type": "microsoft.containerregistry/registries",
                "location": r.region, "resourceGroup": r.rg, "subscriptionId": r.sub,
                "sku": {"name": sku, "tier": sku},
                "tags": {"owner": f"team-{1 + int(rnd() * 40)}"},
                "properties": {
                    "loginServer": r.login, "adminUserEnabled": admin,
                    "anonymousPullEnabled": anon, "publicNetworkAccess": public,
                    "networkRuleSet": {
                        "defaultAction": "Deny" if r.deny else "Allow", "ipRules": ip_rules,
                    },
                    "privateEndpointConnections": pecs,
                    "roleAssignmentMode": (
                        "AbacRepositoryPermissions" if r.abac else "LegacyRegistryPermissions"
                    ),
                },
            })
            if premium and rnd() < 0.10:
                others = [g for g in REGIONS if g != r.region]
                for loc in rng.sample(others, 1 + int(rnd() * 2)):
                    sink.row({
                        "id": f"{r.id}/replications/{loc}", "name": loc,
                        "type": "microsoft.containerregistry/registries/replications",
                        "location": loc, "resourceGroup": r.rg, "subscriptionId": r.sub,
                        "tags": {}, "properties": {"provisioningState": "Succeeded"},
                    })
            self.regs.append(r)
            self.regs_by_sub.setdefault(r.sub, []).append(r)

    def gen_network_plan(self, n_clusters: int) -> None:
        """Hubs, spokes, NAT gateways and their public IPs, the DNS zone and its links."""
        rnd, sink, conn = self.rnd, self.sinks["network"], self.conn_sub
        self.hub_ids = {
            reg: (f"/subscriptions/{conn}/resourceGroups/rg-hub-{reg}"
                  f"/providers/Microsoft.Network/virtualNetworks/vnet-hub-{reg}")
            for reg in REGIONS
        }
        self.spokes: list[_Spoke] = []
        n_spokes = (n_clusters + 9) // 10
        for n in range(1, n_spokes + 1):
            s = _Spoke()
            s.n, s.sub, s.region = n, self.pick(self.lz_subs), self.pick(REGIONS)
            s.rg, s.name = f"rg-net-{n}", f"vnet-spoke-{n}"
            s.id = (f"/subscriptions/{s.sub}/resourceGroups/{s.rg}"
                    f"/providers/Microsoft.Network/virtualNetworks/{s.name}")
            s.subnet_id = f"{s.id}/subnets/nodes"
            k = n - 1
            s.prefix = f"10.{16 + (k >> 4) % 240}.{(k & 15) << 4}.0"
            s.nat_id = s.nat_pip_id = None
            if rnd() < 0.10:
                net = f"/subscriptions/{s.sub}/resourceGroups/{s.rg}/providers/Microsoft.Network"
                s.nat_id = f"{net}/natGateways/natgw-spoke-{n}"
                s.nat_pip_id = f"{net}/publicIPAddresses/pip-natgw-spoke-{n}"
            s.disconnected = rnd() < 0.03
            s.hub_side = (not s.disconnected) or rnd() < 0.5  # hub may have dropped its side
            s.dns = []
            if rnd() < 0.05:
                hub_octet = REGIONS.index(s.region)
                s.dns = [f"10.{hub_octet}.0.4"] if rnd() < 0.5 else ["10.250.0.4", "10.250.0.5"]
            s.linked = rnd() < 0.80
            self.spokes.append(s)

            subnet_props: dict = {"addressPrefix": f"{s.prefix}/22"}
            if s.nat_id:
                subnet_props["natGateway"] = {"id": self.ref(s.nat_id)}
            sink.row({
                "id": s.id, "name": s.name, "type": "microsoft.network/virtualnetworks",
                "location": s.region, "resourceGroup": s.rg, "subscriptionId": s.sub, "tags": {},
                "properties": {
                    "addressSpace": {"addressPrefixes": [f"{s.prefix}/20"]},
                    "dhcpOptions": {"dnsServers": s.dns},
                    "subnets": [{"id": s.subnet_id, "name": "nodes", "properties": subnet_props}],
                    "virtualNetworkPeerings": [{
                        "id": f"{s.id}/virtualNetworkPeerings/to-hub", "name": "to-hub",
                        "properties": {
                            "remoteVirtualNetwork": {"id": self.ref(self.hub_ids[s.region])},
                            "peeringState": "Disconnected" if s.disconnected else "Connected",
                            "allowVirtualNetworkAccess": True,
                        },
                    }],
                },
            })
            if s.nat_id:
                ip = self.egress_ip([])
                sink.row(self.pip_row(s.nat_pip_id, f"pip-natgw-spoke-{n}", s.rg, s.sub,
                                      s.region, ip))
                sink.row({
                    "id": s.nat_id, "name": f"natgw-spoke-{n}",
                    "type": "microsoft.network/natgateways", "location": s.region,
                    "resourceGroup": s.rg, "subscriptionId": s.sub, "tags": {},
                    "sku": {"name": "Standard"},
                    "properties": {
                        "publicIpAddresses": [{"id": self.ref(s.nat_pip_id)}],
                        "subnets": [{"id": self.ref(s.subnet_id)}],
                    },
                })

        by_region: dict[str, list[_Spoke]] = {reg: [] for reg in REGIONS}
        for s in self.spokes:
            by_region[s.region].append(s)
        for octet, reg in enumerate(REGIONS):
            hub = self.hub_ids[reg]
            peerings = [{
                "id": f"{hub}/virtualNetworkPeerings/to-{s.name}", "name": f"to-{s.name}",
                "properties": {
                    "remoteVirtualNetwork": {"id": self.ref(s.id)},
                    "peeringState": "Disconnected" if s.disconnected else "Connected",
                    "allowVirtualNetworkAccess": True,
                },
            } for s in by_region[reg] if s.hub_side]
            sink.row({
                "id": hub, "name": f"vnet-hub-{reg}", "type": "microsoft.network/virtualnetworks",
                "location": reg, "resourceGroup": f"rg-hub-{reg}", "subscriptionId": conn,
                "tags": {},
                "properties": {
                    "addressSpace": {"addressPrefixes": [f"10.{octet}.0.0/16"]},
                    "dhcpOptions": {"dnsServers": []},
                    "subnets": [
                        {"id": f"{hub}/subnets/dns-inbound", "name": "dns-inbound",
                         "properties": {"addressPrefix": f"10.{octet}.0.0/28"}},
                        {"id": f"{hub}/subnets/AzureFirewallSubnet", "name": "AzureFirewallSubnet",
                         "properties": {"addressPrefix": f"10.{octet}.0.64/26"}},
                        {"id": f"{hub}/subnets/privateendpoints", "name": "privateendpoints",
                         "properties": {"addressPrefix": f"10.{octet}.1.0/24"}},
                    ],
                    "virtualNetworkPeerings": peerings,
                },
            })

        zone = (f"/subscriptions/{self.dns_sub}/resourceGroups/rg-dns"
                "/providers/Microsoft.Network/privateDnsZones/privatelink.azurecr.io")
        sink.row({
            "id": zone, "name": "privatelink.azurecr.io", "type": "microsoft.network/privatednszones",
            "location": "global", "resourceGroup": "rg-dns", "subscriptionId": self.dns_sub,
            "tags": {}, "properties": {"provisioningState": "Succeeded"},
        })
        linked = [(f"vnet-hub-{reg}", self.hub_ids[reg]) for reg in REGIONS]
        linked += [(s.name, s.id) for s in self.spokes if s.linked]
        for vnet_name, vnet_id in linked:
            sink.row({
                "id": f"{zone}/virtualNetworkLinks/link-{vnet_name}", "name": f"link-{vnet_name}",
                "type": "microsoft.network/privatednszones/virtualnetworklinks",
                "location": "global", "resourceGroup": "rg-dns", "subscriptionId": self.dns_sub,
                "tags": {},
                "properties": {
                    "virtualNetwork": {"id": self.ref(vnet_id)}, "registrationEnabled": False,
                    "virtualNetworkLinkState": "Completed", "provisioningState": "Succeeded",
                },
            })

    def gen_private_endpoints(self) -> None:
        sink = self.sinks["network"]
        for r in self.regs:
            if r.pe_id is None:
                continue
            sink.row({
                "id": r.pe_id, "name": f"pe-{r.name}", "type": "microsoft.network/privateendpoints",
                "location": r.region, "resourceGroup": f"rg-hub-{r.region}",
                "subscriptionId": self.conn_sub, "tags": {},
                "properties": {
                    "subnet": {"id": self.ref(self.hub_ids[r.region] + "/subnets/privateendpoints")},
                    "privateLinkServiceConnections": [{
                        "name": "registry",
                        "properties": {
                            "privateLinkServiceId": self.ref(r.id), "groupIds": ["registry"],
                            "privateLinkServiceConnectionState": {"status": "Approved"},
                        },
                    }],
                },
            })

    def pick_registry(self, sub: str) -> _Registry:
        same = self.regs_by_sub.get(sub)
        if same and self.rnd() < 0.65:
            return self.pick(same)
        return self.pick(self.regs)

    def gen_clusters(self, n_clusters: int) -> None:
        rnd, guid, ref = self.rnd, self.guid, self.ref
        c_sink, i_sink, n_sink = self.sinks["clusters"], self.sinks["identities"], self.sinks["network"]
        other_roles = [ACR_PUSH, OWNER, CONTRIBUTOR, *self.acr_custom]
        self.puller_groups = [guid() for _ in range(50)]
        self.group_grants: list[tuple[str, str]] = []  # (group, kubelet object id) granted through the group
        self.kubelets: list[str] = []
        self.kubelet_apps: dict[str, str] = {}  # kubelet object id -> its client (app) id
        self.watched: list[tuple[str, list[_Registry]]] = []  # clusters with Container Insights, their registries
        self.sp_clusters: list[tuple[str, str]] = []  # (cluster name, appId)
        workspaces = {region: (f"/subscriptions/{self.subs[0]}/resourceGroups/rg-monitor/providers/"
                               f"Microsoft.OperationalInsights/workspaces/law-{region}") for region in REGIONS}
        abac_tagged: dict[int, list[str]] = {}
        for i in range(n_clusters):
            s = self.spokes[i // 10]
            name = f"aks-{i + 1:05d}"
            sub, region = s.sub, s.region
            rg = f"rg-aks-{i + 1}"
            nrg = f"MC_{rg}_{name}_{region}"
            cid = (f"/subscriptions/{sub}/resourcegroups/{rg}"
                   f"/providers/Microsoft.ContainerService/managedClusters/{name}")
            tags = {"owner": f"team-{1 + int(rnd() * 40)}"}
            tagged: list[_Registry] = []
            if self.regs and rnd() < 0.60:
                x = rnd()
                want = 1 if x < 0.6 else (2 if x < 0.9 else 3)
                words = []
                for _ in range(want):
                    r = self.pick_registry(sub)
                    if r not in tagged:
                        tagged.append(r)
                        words.append(r.name if rnd() < 0.5 else r.login)
                if rnd() < 0.01:  # dangling tag entry: a registry that does not exist
                    while True:
                        ghost = f"acr{self.rng.getrandbits(24):06x}"
                        if ghost not in self.reg_names:
                            break
                    words.append(ghost)
                tags["acr-pull-registries"] = " ".join(words)

            sp_cluster = rnd() < 0.03
            # Registries this cluster's kubelet is granted on (~70% of MSI clusters).
            grants: list[_Registry] = []
            if not sp_cluster and self.regs and rnd() < 0.70:
                targets = tagged or [self.pick_registry(sub)]
                grants.append(self.pick(targets))
                for r in targets:
                    if r not in grants and rnd() < 0.5:
                        grants.append(r)

            if s.nat_id:
                outbound = "userAssignedNATGateway"
            elif rnd() < 0.055:
                outbound = "userDefinedRouting"
            else:
                outbound = "loadBalancer"
            net_profile: dict = {"networkPlugin": "azure", "outboundType": outbound}
            if outbound == "loadBalancer":
                pip_name = f"pip-{name}-egress"
                pip_id = (f"/subscriptions/{sub}/resourceGroups/{nrg}"
                          f"/providers/Microsoft.Network/publicIPAddresses/{pip_name}")
                cand = [rule for r in (tagged or grants) if r.deny for rule in r.rules]
                n_sink.row(self.pip_row(pip_id, pip_name, nrg, sub, region, self.egress_ip(cand)))
                net_profile["loadBalancerProfile"] = {"effectiveOutboundIPs": [{"id": ref(pip_id)}]}

            subnet_ref = ref(s.subnet_id)
            pools = [{"name": "nodepool1", "mode": "System", "vnetSubnetID": subnet_ref}]
            if rnd() < 0.30:
                pools.append({"name": "userpool", "mode": "User", "vnetSubnetID": subnet_ref})

            props: dict = {"provisioningState": "Succeeded", "nodeResourceGroup": nrg}
            if rnd() < 0.70:  # the monitoring add-on sends Kubernetes events and container inventory
                props["addonProfiles"] = {"omsagent": {"enabled": True, "config": {
                    "logAnalyticsWorkspaceResourceID": workspaces.get(region, workspaces["eastus"])}}}
                self.watched.append((cid, list(dict.fromkeys(tagged + grants))))
            row: dict = {
                "id": cid, "name": name, "type": "microsoft.containerservice/managedclusters",
                "location": region, "resourceGroup": rg, "subscriptionId": sub, "tags": tags,
            }
            if sp_cluster:
                app_id = guid()
                props["servicePrincipalProfile"] = {"clientId": app_id}
                self.sp_clusters.append((name, app_id))
            else:
                row["identity"] = {"type": "SystemAssigned", "principalId": guid(),
                                   "tenantId": TENANT_ID}
                props["servicePrincipalProfile"] = {"clientId": "msi"}
                uami_name = f"{name}-agentpool"
                uami_id = (f"/subscriptions/{sub}/resourceGroups/{nrg}"
                           f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{uami_name}")
                object_id, client_id = guid(), guid()
                props["identityProfile"] = {"kubeletidentity": {
                    "resourceId": ref(uami_id), "clientId": client_id, "objectId": object_id,
                }}
                if rnd() >= 0.01:  # ~1% of kubelet identities were deleted
                    i_sink.row({
                        "id": uami_id, "name": uami_name,
                        "type": "microsoft.managedidentity/userassignedidentities",
                        "location": region, "resourceGroup": nrg, "subscriptionId": sub,
                        "tags": {},
                        "properties": {"principalId": object_id, "clientId": client_id,
                                       "tenantId": TENANT_ID},
                    })
                self.kubelets.append(object_id)
                self.kubelet_apps[object_id] = client_id
                for r in tagged:
                    if r.abac:
                        abac_tagged.setdefault(r.idx, []).append(object_id)
                for r in grants:
                    self.grant(r, object_id, other_roles)
            props["agentPoolProfiles"] = pools
            props["networkProfile"] = net_profile
            row["properties"] = props
            c_sink.row(row)

        # ~1% of ABAC registries: a conditioned Repository Reader assignment.
        abac = [r for r in self.regs if r.abac]
        if abac and self.kubelets:
            for r in self.rng.sample(abac, max(1, round(len(abac) * 0.01))):
                principal = self.pick(abac_tagged.get(r.idx) or self.kubelets)
                self.special.append(self.assignment(
                    self.ref(r.id), r.sub, principal, "ServicePrincipal", REPO_READER,
                    condition=ABAC_CONDITION))

    def gen_beyond_resource_graph(self) -> None:
        """What a live run asks beyond Resource Graph: every group's transitive members (the puller groups hold
        ~80% of the kubelets granted through them), the service principals and application credentials of
        service-principal clusters, a few deny assignments, and a day of Container Insights rows."""
        rng = self.extra
        rnd = rng.random

        def uid() -> str:
            h = "%032x" % ((rng.getrandbits(128) & _V4_MASK) | _V4_BITS)
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

        graph, deny, insights = (self.sinks[n] for n in ("microsoft_graph", "deny_assignments", "container_insights"))
        members: dict[str, list[str]] = {g: [] for g in self.puller_groups}
        for group, kubelet in self.group_grants:
            if rnd() < 0.8:
                members[group].append(kubelet)
        for group in self.noise_groups:
            members[group] = [self.noise_members[int(rnd() * len(self.noise_members))] for _ in range(int(rnd() * 6))]
        for group, listed in members.items():
            graph.row({"type": "microsoft.graph/groups", "id": group, "displayName": f"grp-{group[:8]}",
                       "transitiveMembers": listed})
        # Kubelet identities are service principals to Graph: a group's members are answered only as those.
        for kubelet in dict.fromkeys(k for group in self.puller_groups for k in members[group]):
            graph.row({"type": "microsoft.graph/serviceprincipals", "id": kubelet,
                       "appId": self.kubelet_apps[kubelet], "displayName": f"kubelet-{kubelet[:8]}",
                       "servicePrincipalType": "ManagedIdentity"})
        for index, (name, app_id) in enumerate(self.sp_clusters):  # 1 in 10 deleted, expired, expiring soon
            if index % 10 == 0:  # deleted: Graph answers 404
                graph.row({"type": "microsoft.graph/serviceprincipals", "appId": app_id, "notFound": True})
                continue
            graph.row({"type": "microsoft.graph/serviceprincipals", "id": uid(), "appId": app_id,
                       "displayName": f"{name}-sp", "servicePrincipalType": "Application"})
            end = {1: "2026-11-01T00:00:00Z", 2: "2026-12-15T00:00:00Z"}.get(index % 10, "2027-09-30T00:00:00Z")
            graph.row({"type": "microsoft.graph/applications", "id": uid(), "appId": app_id,
                       "passwordCredentials": [{"keyId": uid(), "displayName": "aks", "startDateTime": CREATED_ON,
                                                "endDateTime": end}], "keyCredentials": []})
        denied = rng.sample(self.regs, max(1, round(len(self.regs) * 0.01))) if self.regs else []
        for r in denied:
            name = uid()
            scope = f"/subscriptions/{r.sub}/resourceGroups/{r.rg}"
            principal = self.kubelets[int(rnd() * len(self.kubelets))] if self.kubelets else uid()
            deny.row({"id": f"{scope}/providers/Microsoft.Authorization/denyAssignments/{name}", "name": name,
                      "type": "microsoft.authorization/denyassignments", "properties": {
                          "denyAssignmentName": "Deny pulls outside the appliance",
                          "description": "Created by managed application appliance", "scope": scope,
                          "doNotApplyToChildScopes": False, "isSystemProtected": True,
                          "permissions": [{"actions": [f"{ACR_P}/pull/read"], "notActions": [], "dataActions": [],
                                           "notDataActions": []}],
                          "principals": [{"id": principal, "type": "ServicePrincipal"}], "excludePrincipals": []}})
        captured = datetime.fromisoformat(CAPTURED_AT.replace("Z", "+00:00"))

        def stamp(hours_ago: float) -> str:
            return (captured - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")

        for cid, registries in self.watched:
            for r in registries:
                image = f"{r.login}/app/api:1.0"
                x = rnd()
                if x < 0.06:  # a pull failure: access classes mostly, some tags that do not exist
                    text = PULL_FAILURES[int(rnd() * len(PULL_FAILURES))]
                    last = stamp(rnd() * 20)
                    insights.row({"type": "containerinsights/kubeevents", "TimeGenerated": last, "ClusterId": cid,
                                  "ClusterName": cid.rsplit("/", 1)[-1], "Namespace": "apps", "Name": "api-7d9f-x2",
                                  "ObjectKind": "Pod", "Reason": "Failed", "KubeEventType": "Warning",
                                  "Count": 1 + int(rnd() * 20), "FirstSeen": stamp(22), "LastSeen": last,
                                  "Message": f'Failed to pull image "{image}": '
                                             + text.format(image=image, host=r.login, ip="20.1.2.3")})
                if x > 0.15:  # images from it run on the cluster
                    insights.row({"type": "containerinsights/containerinventory", "TimeGenerated": stamp(rnd() * 20),
                                  "_ResourceId": cid, "Repository": r.login, "Image": "app/api", "ImageTag": "1.0",
                                  "ContainerState": "Running", "ContainerHostname": "api-7d9f-x2"})

    def grant(self, r: _Registry, object_id: str, other_roles: list[str]) -> None:
        rnd = self.rnd
        x = rnd()
        if x < 0.10:
            role = self.pick(other_roles)
        elif r.abac and rnd() < 0.5:
            role = REPO_READER
        else:
            role = ACR_PULL
        principal, ptype = object_id, "ServicePrincipal"
        if rnd() < 0.02:  # granted to a group the kubelet is (maybe) a member of
            principal, ptype = self.pick(self.puller_groups), "Group"
            self.group_grants.append((principal, object_id))
        y = rnd()
        if y < 0.02:
            mg = self.pick(r.mg_chain)
            self.special.append(self.assignment(MG_PREFIX + mg, "", principal, ptype, role))
            return
        if y < 0.07:
            scope = f"/subscriptions/{r.sub}"
        elif y < 0.25:
            scope = self.ref(f"/subscriptions/{r.sub}/resourceGroups/{r.rg}")
        else:
            scope = self.ref(r.id)
        provider_form = role not in self.acr_custom and rnd() < 0.10
        self.special.append(self.assignment(scope, r.sub, principal, ptype, role, provider_form))

    def gen_role_assignments(self, total: int) -> None:
        rng, rnd = self.rng, self.rnd
        write = self.sinks["role_assignments"].f.write
        special = self.special[:total]
        positions = sorted(rng.sample(range(total), len(special))) if special else []
        positions.append(-1)

        # Principal pool: ~2% groups, ~38% service principals, ~60% users.
        n_pool = 200_000
        pool = [self.guid() for _ in range(n_pool)]
        ptypes = []
        for _ in range(n_pool):
            x = rnd()
            ptypes.append("Group" if x < 0.02 else ("ServicePrincipal" if x < 0.40 else "User"))
        self.noise_groups = [p for p, t in zip(pool, ptypes, strict=True) if t == "Group"]
        self.noise_members = pool[:5000]

        # Scope pools (strings prebuilt; RG scopes in both spellings).
        subs = self.subs
        rg_scopes: list[tuple[str, str, str]] = []  # (scope, lower-case variant, sub)
        rg_seen: dict[str, None] = {}
        for sub in subs:
            for k in range(1, 4):
                rg_seen[f"/subscriptions/{sub}/resourceGroups/rg-app-{k}"] = None
        for r in self.regs:
            rg_seen[f"/subscriptions/{r.sub}/resourceGroups/{r.rg}"] = None
        for s in self.spokes:
            rg_seen[f"/subscriptions/{s.sub}/resourceGroups/{s.rg}"] = None
        for scope in rg_seen:
            rg_scopes.append((scope, scope.replace("/resourceGroups/", "/resourcegroups/", 1),
                              scope.split("/", 3)[2]))
        mg_scopes = [MG_PREFIX + name for name, _d, _p in MANAGEMENT_GROUPS]
        reg_scopes = [(r.id, r.sub) for r in self.regs]
        reg_roles = (ACR_PULL, ACR_PULL, ACR_PUSH, READER, REPO_READER)
        noise_roles = self.noise_roles
        n_subs, n_rg, n_mg, n_reg = len(subs), len(rg_scopes), len(mg_scopes), len(reg_scopes)
        n_noise, n_custom = len(noise_roles), len(self.noise_custom)
        getrandbits, template = rng.getrandbits, RA_TEMPLATE
        mask, bits = _V4_MASK, _V4_BITS

        j, nxt = 0, positions[0]
        chunk = 100_000
        for start in range(0, total, chunk):
            for pos in range(start, min(start + chunk, total)):
                if pos == nxt:
                    write(special[j])
                    j += 1
                    nxt = positions[j]
                    continue
                x = rnd()
                if x < 0.40:
                    sub = subs[int(rnd() * n_subs)]
                    scope = "/subscriptions/" + sub
                elif x < 0.92:
                    scope, lower, sub = rg_scopes[int(rnd() * n_rg)]
                    if rnd() < 0.10:
                        scope = lower
                elif x < 0.95:
                    scope, sub = mg_scopes[int(rnd() * n_mg)], ""
                elif n_reg:
                    scope, sub = reg_scopes[int(rnd() * n_reg)]
                else:
                    sub = subs[int(rnd() * n_subs)]
                    scope = "/subscriptions/" + sub
                y = rnd()
                if x >= 0.95 and n_reg:
                    role = reg_roles[int(y * 5)]
                elif y < 0.90:
                    role = noise_roles[int(rnd() * n_noise)]
                elif y < 0.94:
                    role = READER
                elif y < 0.97:
                    role = CONTRIBUTOR
                elif y < 0.98:
                    role = OWNER
                else:
                    role, sub = self.noise_custom[int(rnd() * n_custom)]
                    scope = "/subscriptions/" + sub
                # ~5% of subscription-scoped rows use the tenant-level roleDefinitionId form.
                rd = "/subscriptions/" + sub + RD_PREFIX + role if sub and y > 0.05 else RD_PREFIX + role
                p = int(rnd() * n_pool)
                h = "%032x" % ((getrandbits(128) & mask) | bits)
                g = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
                write(template % (scope, g, g, sub, scope, pool[p], ptypes[p], rd))
            self.progress(f"role assignments: {min(start + chunk, total):,}/{total:,}")
        self.sinks["role_assignments"].n = total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--clusters", type=int, default=20000)
    ap.add_argument("--registries", type=int, default=5000)
    ap.add_argument("--role-assignments", type=int, default=1_000_000)
    ap.add_argument("--subscriptions", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    counts = generate(
        args.out_dir, clusters=args.clusters, registries=args.registries,
        role_assignments=args.role_assignments, subscriptions=args.subscriptions,
        seed=args.seed, progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True),
    )
    elapsed = time.perf_counter() - t0
    for name, n in counts.items():
        print(f"{name + '.jsonl':<24} {n:>10,}")
    print(f"elapsed {elapsed:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
