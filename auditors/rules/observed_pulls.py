"""AKS-ACR-002: what the cluster itself saw. Image-pull failures from Container Insights, explained from the
static verdicts of the same pair."""

from __future__ import annotations

from auditors.model import T_CONTAINER_INVENTORY, T_KUBE_EVENTS
from auditors.observed import FORBIDDEN, NAME_RESOLUTION, UNAUTHORIZED, UNREACHABLE, PullFailures
from auditors.rules import Result, RuleMeta, Scope, Severity, Status, failed, not_applicable, passed, rule, unknown
from auditors.rules.context import PairContext

DOCS = "https://learn.microsoft.com/troubleshoot/azure/azure-kubernetes/connectivity/cannot-pull-image-from-acr-to-aks-cluster"
ENABLE_INSIGHTS = ("enable Container Insights (`az aks enable-addons --addons monitoring --resource-group "
                   "{rg} --name {name} --workspace-resource-id <workspace-id>`) so failed pulls can be seen")


def _status(ctx, rule_id: str) -> Status:
    return ctx.result(rule_id).status


def _unauthorized(ctx: PairContext) -> list[str]:
    cluster = ctx.cluster_ctx
    if _status(cluster, "AKS-ACR-005") == Status.FAIL:
        return ["the cluster has no usable pull identity (AKS-ACR-005 Fail: " + cluster.result("AKS-ACR-005").message
                + ") — guide cause 4"]
    if _status(cluster, "AKS-ACR-012") == Status.FAIL:
        return ["the cluster's service principal cannot sign in (AKS-ACR-012 Fail) — guide cause 4"]
    permission = ctx.result("AKS-ACR-001")
    if permission.status == Status.FAIL:
        return ["the pull identity holds no role granting pull (AKS-ACR-001 Fail) — guide cause 1"]
    if permission.status == Status.UNKNOWN:
        return ["the pull permission could not be confirmed (AKS-ACR-001 Unknown: " + permission.message + ")"]
    return ["configuration shows a pull identity with a pull role, so something it does not show: the kubelet uses "
            "the pod's imagePullSecrets before its own identity, so suspect pods relying on a wrong or stale pull "
            "secret (guide cause 2: rely on the kubelet identity and remove or fix the secret), node pools still "
            "running with another identity than the cluster row's, an ABAC condition that excludes the repository, "
            "or a registry name that belongs to another tenant"]


def _forbidden(ctx: PairContext, failures: PullFailures) -> list[str]:
    egress = ctx.cluster_ctx.egress
    outside = [ip for ip in failures.client_ips if egress.ips and ip not in egress.ips]
    if outside:
        return [f"ACR refused client IP {', '.join(outside)}, which is not among the egress IPs Resource Graph shows "
                f"for the cluster ({', '.join(egress.ips)}): the egress model is wrong (a firewall, NAT or proxy in "
                "the path) — allow the address ACR reports, guide cause 3"]
    route = ctx.result("AKS-ACR-003")
    if route.status == Status.FAIL:
        return ["the registry firewall or private endpoint blocks the cluster (AKS-ACR-003 Fail) — guide cause 3"]
    seen = f" (ACR saw {', '.join(failures.client_ips)})" if failures.client_ips else \
        " (the message carries no client IP, as containerd's usually do not)"
    return [f"the registry's network rules refuse the cluster{seen}; AKS-ACR-003 is {route.status.value}: "
            f"{route.message} — guide cause 3"]


def _unreachable(ctx: PairContext) -> list[str]:
    reasons = []
    if ctx.private_route.paths or ctx.result("AKS-ACR-004").status != Status.NOT_APPLICABLE:
        dns = ctx.result("AKS-ACR-004")
        reasons.append(f"the pull goes through a private endpoint: check the privatelink.azurecr.io zone link and "
                       f"the peering (AKS-ACR-004 {dns.status.value}: {dns.message})")
    route = ctx.result("AKS-ACR-003")
    if route.status != Status.PASS or not reasons:
        reasons.append(f"the network path: DNS forwarders, firewalls or routes (AKS-ACR-003 {route.status.value}: "
                       f"{route.message})")
    return reasons


@rule(RuleMeta(
    id="AKS-ACR-002",
    title="No access failures observed when the cluster pulls from the registry",
    severity=Severity.HIGH,
    scope=Scope.PAIR,
    category="Observed",
    seed_cause=2,
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN, Status.NOT_APPLICABLE}),
    synopsis="Container Insights saw no image pull from the registry fail for access reasons (401, 403, name "
             "resolution, unreachable) in the lookback window.",
    remediation=(
        "# 401 Unauthorized: give the kubelet identity pull, and find pods that carry their own pull secret:\n"
        "az aks update --resource-group {cluster_rg} --name {cluster_name} --attach-acr {registry_id}\n"
        "kubectl get pods --all-namespaces -o yaml | grep -B 5 imagePullSecrets\n"
        "# 403 Forbidden: allow the address ACR reports in the registry firewall:\n"
        "az acr network-rule add --name {registry_name} --resource-group {registry_rg} --ip-address {client_ip}\n"
        "# Name resolution or timeouts over a private endpoint: check the zone link and the peering:\n"
        "az network private-dns link vnet list --resource-group <dns-zone-rg> --zone-name privatelink.azurecr.io "
        "-o table"
    ),
    links=(DOCS, "https://learn.microsoft.com/azure/azure-monitor/containers/container-insights-overview"),
))
def no_access_failures_observed(ctx: PairContext) -> Result:
    cluster, inventory = ctx.cluster, ctx.inventory
    if not cluster.insights_workspace:
        return unknown("The cluster sends no Container Insights data, so its pulls cannot be observed: "
                       + ENABLE_INSIGHTS.format(rg=cluster.resource_group, name=cluster.name) + ".")
    allowed = inventory.permissions.get("containerInsights")
    if allowed is False:
        return unknown(f"Container Insights (workspace {cluster.insights_workspace}) refused this run's credential: "
                       "grant Log Analytics Reader on the workspace (docs/permissions.md).",
                       workspace=cluster.insights_workspace)
    if allowed is None and not (inventory.collected(T_KUBE_EVENTS) or inventory.collected(T_CONTAINER_INVENTORY)):
        return unknown(f"Container Insights (workspace {cluster.insights_workspace}) was not read in this run: a live "
                       "run reads it with Log Analytics Reader on the workspace.", workspace=cluster.insights_workspace)
    host = ctx.login_server
    observed = ctx.env.observed
    failures = observed.failures_for(cluster.id, host)
    evidence = {"registry": host, "workspace": cluster.insights_workspace, "windowStart": observed.window_start
                .isoformat(timespec="seconds").replace("+00:00", "Z"), "lookbackHours":
                round(observed.lookback.total_seconds() / 3600, 1)}
    others = observed.others_of(cluster.id)
    if others:
        evidence["otherRegistries"] = dict(list(others.items())[:10])
    if failures is not None:
        evidence["classes"] = {c: int(failures.counts[c]) for c in failures.classes}
        evidence["failures"] = failures.to_dict()
    access = failures.access_classes if failures is not None else []
    if access:
        return _access_failure(ctx, failures, access, evidence)
    unread = [g for g in inventory.missing([T_KUBE_EVENTS, T_CONTAINER_INVENTORY], {cluster.subscription_id})
              if cluster.insights_workspace in g.reason.lower()]
    if unread:
        return unknown(f"The cluster's Container Insights workspace could not be read completely: {unread[0].reason}.",
                       **evidence)
    ran = observed.last_ran(cluster.id, host)
    if ran is not None:
        evidence["lastRunning"] = ran.isoformat(timespec="seconds").replace("+00:00", "Z")
        extra = f" ({failures.total} other failed pull(s): {', '.join(failures.classes)})" if failures else ""
        return passed(f"Images from {host} ran on the cluster in the window and no access failure was seen{extra}.",
                      **evidence)
    if failures is not None:
        return not_applicable(f"Only {', '.join(failures.classes)} pull failures from {host} were seen (not access "
                              "problems), and no image from it ran in the window.", **evidence)
    return not_applicable(f"Nothing from {host} ran or failed to pull on the cluster in the window.", **evidence)


def _access_failure(ctx: PairContext, failures: PullFailures, access: list[str], evidence: dict) -> Result:
    explanations = []
    for cls in access:
        if cls == UNAUTHORIZED:
            explanations += [f"401 Unauthorized: {text}" for text in _unauthorized(ctx)]
        elif cls == FORBIDDEN:
            explanations += [f"403 Forbidden: {text}" for text in _forbidden(ctx, failures)]
        elif cls in (NAME_RESOLUTION, UNREACHABLE):
            explanations += [f"{cls}: {text}" for text in _unreachable(ctx)]
    evidence["explanations"] = explanations
    counts = ", ".join(f"{int(failures.counts[c])} {c}" for c in access)
    last = failures.last_seen.isoformat(timespec="seconds").replace("+00:00", "Z") if failures.last_seen else "?"
    where = f" in {', '.join(failures.namespaces[:3])}" if failures.namespaces else ""
    return failed(f"Pulls from {ctx.login_server} failed{where}: {counts}, last seen {last}. Likely cause"
                  f"{'s' if len(explanations) > 1 else ''}: " + " | ".join(explanations)
                  + f". Sample: {failures.sample_message[:300]}",
                  fix={"client_ip": failures.client_ips[0] if failures.client_ips else "<ip-acr-reports>"},
                  **evidence)

