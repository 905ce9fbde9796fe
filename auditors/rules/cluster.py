"""Cluster-scope rules: does the cluster have an identity it can pull with."""

from __future__ import annotations

from auditors.model import (
    IDENTITY_MANAGED,
    IDENTITY_NONE,
    IDENTITY_SERVICE_PRINCIPAL,
    IDENTITY_UNKNOWN,
    T_IDENTITY,
    T_SUBSCRIPTION,
)
from auditors.rules import Result, RuleMeta, Scope, Severity, Status, failed, not_applicable, passed, rule, unknown
from auditors.rules.context import ClusterContext

LINK_MI = "https://learn.microsoft.com/azure/aks/use-managed-identity"
LINK_KUBELET = "https://learn.microsoft.com/azure/aks/pre-created-kubelet-managed-identity"


@rule(RuleMeta(
    id="AKS-ACR-005",
    title="Cluster has a usable pull identity",
    severity=Severity.HIGH,
    scope=Scope.CLUSTER,
    category="Identity",
    seed_cause=4,
    needs=(T_IDENTITY, T_SUBSCRIPTION),
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN}),
    synopsis="The cluster has an identity to pull images with, and its kubelet identity still exists.",
    remediation=(
        "# Move the cluster to managed identity (creates a kubelet identity):\n"
        "az aks update --resource-group {cluster_rg} --name {cluster_name} --enable-managed-identity\n"
        "# Or replace a deleted kubelet identity with a new user-assigned identity:\n"
        "az identity create --resource-group {cluster_rg} --name {cluster_name}-kubelet\n"
        "az aks update --resource-group {cluster_rg} --name {cluster_name} "
        "--assign-identity <control-plane-identity-resource-id> "
        "--assign-kubelet-identity <new-kubelet-identity-resource-id>\n"
        "# Then grant it pull on each registry:\n"
        "az aks update --resource-group {cluster_rg} --name {cluster_name} --attach-acr <registry-resource-id>"
    ),
    links=(LINK_MI, LINK_KUBELET),
))
def usable_pull_identity(ctx: ClusterContext) -> Result:
    cluster, inventory = ctx.cluster, ctx.inventory
    kind = cluster.identity_kind
    if not cluster.has_properties:
        return unknown("The cluster row carries no properties, so its kubelet identity cannot be read.",
                       identityType=cluster.identity_type or None)
    if kind == IDENTITY_UNKNOWN:
        return unknown("The cluster row carries neither servicePrincipalProfile nor identity, so its pull identity "
                       "cannot be read.")
    if kind == IDENTITY_NONE:
        return failed("The cluster has no identity: identity type is None and no service principal is configured.",
                      identityType=cluster.identity_type)
    if kind == IDENTITY_SERVICE_PRINCIPAL:
        return passed(f"The cluster pulls as service principal {cluster.service_principal_client_id} "
                      "(see AKS-ACR-006 for moving to managed identity).",
                      servicePrincipalClientId=cluster.service_principal_client_id)
    evidence = {"kubeletObjectId": cluster.kubelet_object_id or None,
                "kubeletResourceId": cluster.kubelet_resource_id or None}
    if not (cluster.kubelet_object_id or cluster.kubelet_resource_id):
        return failed("The cluster uses managed identity but has no kubelet identity "
                      "(properties.identityProfile.kubeletidentity is empty), so nodes cannot authenticate to ACR.",
                      **evidence)
    identity_key = cluster.kubelet_resource_id.lower()
    if not identity_key or identity_key in inventory.identities:
        return passed("The kubelet identity exists and can be granted pull.", **evidence)
    identity_sub = identity_key.split("/")[2] if identity_key.startswith("/subscriptions/") else ""
    if not inventory.collected(T_IDENTITY):
        return unknown("The snapshot holds no user-assigned identity rows, so whether the kubelet identity still "
                       "exists cannot be checked.", **evidence)
    if identity_sub and inventory.in_scope(identity_sub):
        return failed(f"The kubelet identity {cluster.kubelet_resource_id} no longer exists in subscription "
                      f"{identity_sub}; nodes cannot get tokens and every pull fails with 401.", **evidence)
    return unknown(f"The kubelet identity lives in subscription {identity_sub or '(unknown)'}, which is outside "
                   "the snapshot's scope, so its existence cannot be confirmed.", **evidence)


@rule(RuleMeta(
    id="AKS-ACR-006",
    title="Cluster uses managed identity, not a service principal",
    severity=Severity.MEDIUM,
    scope=Scope.CLUSTER,
    category="Identity",
    seed_cause=4,
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN, Status.NOT_APPLICABLE}),
    synopsis="Clusters authenticate to ACR with a managed (kubelet) identity rather than a service principal secret.",
    remediation=(
        "az aks update --resource-group {cluster_rg} --name {cluster_name} --enable-managed-identity\n"
        "# Node pools pick up the kubelet identity after a node image upgrade:\n"
        "az aks nodepool upgrade --resource-group {cluster_rg} --cluster-name {cluster_name} "
        "--name <nodepool> --node-image-only\n"
        "az aks update --resource-group {cluster_rg} --name {cluster_name} --attach-acr <registry-resource-id>"
    ),
    links=(LINK_MI, "https://learn.microsoft.com/azure/aks/kubernetes-service-principal"),
))
def uses_managed_identity(ctx: ClusterContext) -> Result:
    cluster = ctx.cluster
    evidence = {"servicePrincipalClientId": cluster.service_principal_client_id or None,
                "identityType": cluster.identity_type or None}
    kind = cluster.identity_kind
    if kind == IDENTITY_UNKNOWN:
        return unknown("The cluster row has neither servicePrincipalProfile nor identity.", **evidence)
    if kind == IDENTITY_NONE:
        return not_applicable("The cluster has no identity at all; AKS-ACR-005 reports it.", **evidence)
    if kind == IDENTITY_MANAGED:
        return passed("The cluster uses managed identity.", **evidence)
    return failed(f"The cluster uses service principal {cluster.service_principal_client_id}; its secret expires "
                  "and, once expired or rotated out of sync, image pulls fail.", **evidence)
