"""AKS-ACR-000: one pull verdict per cluster and registry, from the checks that can block a pull, in the order a
pull meets them: the identity, its permission, the network path, name resolution, then what was observed."""

from __future__ import annotations

from auditors.rules import RULES, Result, RuleMeta, Scope, Severity, Status, failed, passed, rule, unknown
from auditors.rules.context import PairContext

# (rule id, evaluated on the cluster rather than the pair), in the order a pull meets them.
BLOCKING = (("AKS-ACR-005", True), ("AKS-ACR-012", True), ("AKS-ACR-001", False), ("AKS-ACR-003", False),
            ("AKS-ACR-004", False), ("AKS-ACR-002", False))
OBSERVED = "AKS-ACR-002"
BLOCKING_RULES = tuple(rule_id for rule_id, _ in BLOCKING)


def observed_without_data(status: str, evidence: dict | None) -> bool:
    """An AKS-ACR-002 verdict that saw nothing (no Container Insights data for the pair): it does not count."""
    return status == Status.UNKNOWN and "failures" not in (evidence or {})


def _checks(ctx: PairContext) -> list[tuple[str, Result]]:
    checks = []
    for rule_id, on_cluster in BLOCKING:
        result = (ctx.cluster_ctx if on_cluster else ctx).result(rule_id)
        if rule_id == OBSERVED and observed_without_data(result.status, result.evidence):
            continue  # observed data only counts where it exists
        checks.append((rule_id, result))
    return checks


@rule(RuleMeta(
    id="AKS-ACR-000",
    title="Cluster can pull from registry",
    severity=Severity.HIGH,
    scope=Scope.PAIR,
    category="Pull",
    seed_cause=None,
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN}),
    synopsis="Every check that can stop this cluster pulling from this registry passes: identity (AKS-ACR-005, "
             "AKS-ACR-012), permission (AKS-ACR-001), network route (AKS-ACR-003), private DNS (AKS-ACR-004) and, "
             "where Container Insights shows pulls, observed failures (AKS-ACR-002).",
    remediation=(
        "# Fix the root cause first (the Message names it); the chain of checks and each one's fix:\n"
        "python -m auditors explain {cluster_name} {registry_name}\n"
        "# Then confirm from the cluster itself:\n"
        "az aks check-acr --resource-group {cluster_rg} --name {cluster_name} --acr {registry_login_server}"
    ),
    controls=("MCSB:PA-7", "MCSB:NS-2", "MCSB:IM-3"),
    links=("https://learn.microsoft.com/azure/aks/cluster-container-registry-integration",
           "https://learn.microsoft.com/troubleshoot/azure/azure-kubernetes/connectivity/"
           "cannot-pull-image-from-acr-to-aks-cluster"),
))
def cluster_can_pull(ctx: PairContext) -> Result:
    checks = _checks(ctx)
    listed = [{"rule": rule_id, "status": result.status.value} for rule_id, result in checks]
    failing = [(rule_id, result) for rule_id, result in checks if result.status == Status.FAIL]
    undecided = [(rule_id, result) for rule_id, result in checks if result.status == Status.UNKNOWN]
    if failing:
        root, result = failing[0]
        also = f" Also failing: {', '.join(r for r, _ in failing[1:])}." if len(failing) > 1 else ""
        return failed(f"Cannot pull: {root} ({RULES[root].meta.title}): {result.message}{also}",
                      checks=listed, rootCause=root)
    if undecided:
        root, result = undecided[0]
        others = f" Also undecided: {', '.join(r for r, _ in undecided[1:])}." if len(undecided) > 1 else ""
        return unknown(f"Undecided, no check fails: {root} ({RULES[root].meta.title}): {result.message}{others}",
                       checks=listed, rootCause=root)
    passing = [r for r, result in checks if result.status == Status.PASS]
    moot = [r for r, result in checks if result.status == Status.NOT_APPLICABLE]
    return passed(f"No blocking check fails or is undecided: Pass {', '.join(passing) or 'none'}"
                  + (f"; NotApplicable {', '.join(moot)}" if moot else "") + ".", checks=listed)
