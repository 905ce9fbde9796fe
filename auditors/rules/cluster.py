"""Cluster-scope rules: does the cluster have an identity it can pull with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from auditors.identity import graph_state
from auditors.model import (
    IDENTITY_MANAGED,
    IDENTITY_NONE,
    IDENTITY_SERVICE_PRINCIPAL,
    IDENTITY_UNKNOWN,
    T_IDENTITY,
    T_SUBSCRIPTION,
    AppCredential,
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
    controls=("MCSB:IM-3", "NIST-800-53:IA-5"),
    links=(LINK_MI, LINK_KUBELET),
))
def usable_pull_identity(ctx: ClusterContext) -> Result:
    cluster, inventory = ctx.cluster, ctx.inventory
    kind = cluster.identity_kind
    if not cluster.has_properties:
        return unknown("The cluster row carries no properties, so its kubelet identity cannot be read.",
                       identityType=cluster.identity_type or None)
    if kind == IDENTITY_UNKNOWN and cluster.provisioning_state:
        return failed("The cluster has no identity: its complete row (provisioningState "
                      f"{cluster.provisioning_state}) carries neither identity nor servicePrincipalProfile, so nodes "
                      "have nothing to authenticate to ACR with.", provisioningState=cluster.provisioning_state)
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
    controls=("MCSB:IM-3", "NIST-800-53:IA-5", "PSRule:Azure.AKS.ManagedIdentity"),
    links=(LINK_MI, "https://learn.microsoft.com/azure/aks/kubernetes-service-principal"),
))
def uses_managed_identity(ctx: ClusterContext) -> Result:
    cluster = ctx.cluster
    evidence = {"servicePrincipalClientId": cluster.service_principal_client_id or None,
                "identityType": cluster.identity_type or None}
    kind = cluster.identity_kind
    if kind == IDENTITY_UNKNOWN and not cluster.provisioning_state:
        return unknown("The cluster row has neither servicePrincipalProfile nor identity.", **evidence)
    if kind in (IDENTITY_NONE, IDENTITY_UNKNOWN):  # a complete row without either: no identity, as AKS-ACR-005 says
        return not_applicable("The cluster has no identity at all; AKS-ACR-005 reports it.", **evidence)
    if kind == IDENTITY_MANAGED:
        return passed("The cluster uses managed identity.", **evidence)
    return failed(f"The cluster uses service principal {cluster.service_principal_client_id}; its secret expires "
                  "and, once expired or rotated out of sync, image pulls fail.", **evidence)


LINK_SP = "https://learn.microsoft.com/azure/aks/update-credentials"
SP_REMEDIATION = (
    "# Give the service principal a new secret and hand it to the cluster:\n"
    "az ad app credential reset --id {sp_app_id} --append --years 1\n"
    "az aks update-credentials --resource-group {cluster_rg} --name {cluster_name} --reset-service-principal "
    "--service-principal {sp_app_id} --client-secret <new-secret>\n"
    "# Better: move the cluster to managed identity (no secret to expire):\n"
    "az aks update --resource-group {cluster_rg} --name {cluster_name} --enable-managed-identity"
)


@dataclass(frozen=True)
class CredentialState:
    """A service-principal cluster's credentials as Microsoft Graph shows them, or why they are unknown."""

    app_id: str
    result: Result | None  # a verdict reached before looking at dates (not applicable, unknown, deleted)
    valid: list[tuple[datetime, AppCredential]]  # unexpired, newest first
    expired: list[tuple[datetime, AppCredential]]
    undated: list[AppCredential]


def _credentials(ctx: ClusterContext) -> CredentialState:
    cluster, inventory = ctx.cluster, ctx.inventory
    app_id = cluster.service_principal_client_id.lower()
    if cluster.identity_kind != IDENTITY_SERVICE_PRINCIPAL:
        return CredentialState(app_id, not_applicable("The cluster does not authenticate with a service principal.",
                                                      identityType=cluster.identity_type or None), [], [], [])
    evidence = {"servicePrincipalAppId": app_id}
    principal = inventory.service_principals.get(app_id)
    if principal is None:
        return CredentialState(app_id, unknown(f"Whether service principal appId {app_id} still exists is unknown: "
                                               f"{graph_state(inventory, 'Application.Read.All')}.", **evidence),
                               [], [], [])
    if not principal.object_id:
        return CredentialState(app_id, failed(f"The cluster's service principal appId {app_id} no longer exists in "
                                              "Microsoft Entra ID: nodes cannot sign in, so every pull fails.",
                                              fix={"sp_app_id": app_id}, **evidence), [], [], [])
    application = inventory.applications.get(app_id)
    if application is None or not application.found:
        why = (f"{graph_state(inventory, 'Application.Read.All')}" if application is None else
               "its application object is not in this tenant (an application registered in another tenant)")
        return CredentialState(app_id, unknown(f"Service principal {principal.display_name or app_id} exists, but its "
                                               f"credential end dates are unknown: {why}.",
                                               servicePrincipalObjectId=principal.object_id, **evidence), [], [], [])
    valid, expired, undated = [], [], []
    for credential in application.credentials:
        end = _parse_time(credential.end)
        if end is None:
            undated.append(credential)
        else:
            (valid if end > ctx.env.now else expired).append((end, credential))
    valid.sort(key=lambda item: item[0], reverse=True)
    expired.sort(key=lambda item: item[0], reverse=True)
    return CredentialState(app_id, None, valid, expired, undated)


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _listed(credentials: list[tuple[datetime, AppCredential]]) -> list[dict]:
    return [{"keyId": c.key_id, "displayName": c.display_name or None, "kind": c.kind, "endDateTime": c.end}
            for _, c in credentials[:10]]


@rule(RuleMeta(
    id="AKS-ACR-012",
    title="Cluster service principal exists and holds an unexpired credential",
    severity=Severity.HIGH,
    scope=Scope.CLUSTER,
    category="Identity",
    seed_cause=4,
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN, Status.NOT_APPLICABLE}),
    synopsis="A cluster that pulls as a service principal can sign in: the service principal still exists and at "
             "least one of its credentials has not expired.",
    remediation=SP_REMEDIATION,
    controls=("MCSB:IM-3", "NIST-800-53:IA-5"),
    links=(LINK_SP, "https://learn.microsoft.com/azure/aks/kubernetes-service-principal", LINK_MI),
))
def service_principal_can_sign_in(ctx: ClusterContext) -> Result:
    state = _credentials(ctx)
    if state.result is not None:
        return state.result
    evidence = {"servicePrincipalAppId": state.app_id, "valid": _listed(state.valid), "expired": _listed(state.expired)}
    if state.valid:
        end = state.valid[0][0]
        return passed(f"The service principal holds {len(state.valid)} unexpired credential(s); the newest is valid "
                      f"until {end:%Y-%m-%d}.", **evidence)
    if state.undated:
        return unknown(f"No credential of the service principal is known to be valid: {len(state.undated)} have no "
                       "readable end date.", **evidence)
    if state.expired:
        end = state.expired[0][0]
        return failed(f"Every credential of the service principal has expired, the newest on {end:%Y-%m-%d}: nodes "
                      "cannot sign in, so every pull fails with 401.", fix={"sp_app_id": state.app_id}, **evidence)
    return failed("The service principal has no password or certificate credential at all: nodes cannot sign in.",
                  fix={"sp_app_id": state.app_id}, **evidence)


@rule(RuleMeta(
    id="AKS-ACR-014",
    title="Cluster service principal credential does not expire soon",
    severity=Severity.MEDIUM,
    scope=Scope.CLUSTER,
    category="Identity",
    seed_cause=4,
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN, Status.NOT_APPLICABLE}),
    synopsis="The newest credential of a service-principal cluster does not expire within the warning window "
             "(AUDIT_CREDENTIAL_WARN_DAYS, default 30 days).",
    remediation=SP_REMEDIATION,
    controls=("MCSB:IM-3", "NIST-800-53:IA-5"),
    links=(LINK_SP, LINK_MI),
))
def service_principal_credential_not_expiring(ctx: ClusterContext) -> Result:
    state = _credentials(ctx)
    if state.result is not None:
        if state.result.status == Status.FAIL:  # the service principal is gone: AKS-ACR-012 reports it
            return not_applicable("The service principal no longer exists (see AKS-ACR-012).",
                                  **state.result.evidence)
        return state.result
    if not state.valid:
        if state.undated:
            return unknown("The service principal's credentials have no readable end date.",
                           servicePrincipalAppId=state.app_id)
        return not_applicable("No credential is valid any more (see AKS-ACR-012).", servicePrincipalAppId=state.app_id)
    end, newest = state.valid[0]
    days = (end - ctx.env.now).days
    evidence = {"servicePrincipalAppId": state.app_id, "newestEndDateTime": newest.end, "daysLeft": days,
                "warnDays": ctx.env.credential_warn_days}
    if days < ctx.env.credential_warn_days:
        return failed(f"The newest credential of the service principal expires on {end:%Y-%m-%d}, in {days} day(s) "
                      f"(warning window {ctx.env.credential_warn_days} days); after that every pull fails with 401.",
                      fix={"sp_app_id": state.app_id}, **evidence)
    return passed(f"The newest credential is valid until {end:%Y-%m-%d} ({days} days).", **evidence)
