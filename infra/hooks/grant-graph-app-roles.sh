#!/bin/sh
# Grants the auditor's managed identity the Microsoft Graph application roles it reads with:
#   GroupMember.Read.All  - the service principals inside groups that hold pull roles
#   Application.Read.All  - a cluster service principal's application and its credentials' end dates
# Usage: sh infra/hooks/grant-graph-app-roles.sh <AUDITOR_PRINCIPAL_ID>
# azd runs it after provisioning (azure.yaml). The signed-in `az` user needs Privileged Role Administrator (or
# Global Administrator) in Entra ID, or Graph AppRoleAssignment.ReadWrite.All + Application.Read.All; Azure
# Owner is not enough. Without those rights, set AUDITOR_SKIP_GRAPH_ROLES=true and have an Entra administrator
# run this script. Idempotent: a role already assigned is left alone (Graph refuses a duplicate assignment).
set -eu

principal_id="${1:?usage: grant-graph-app-roles.sh <principal object id of the auditor identity>}"
graph_app_id="00000003-0000-0000-c000-000000000000"
# Attempts while a new identity's service principal is not yet visible in Microsoft Graph (replication).
attempts=6
retry_seconds="${AUDITOR_GRAPH_RETRY_SECONDS:-20}"

graph_resource=$(az cloud show --query endpoints.microsoftGraphResourceId --output tsv)
graph="${graph_resource%/}/v1.0"
graph_sp_url="$graph/servicePrincipals(appId='$graph_app_id')"
assignments_url="$graph/servicePrincipals/$principal_id/appRoleAssignments"

graph_sp_id=$(az rest --method get --url "$graph_sp_url" --query id --output tsv)

attempt=1
until granted=$(az rest --method get --url "$assignments_url" \
    --query "value[?resourceId=='$graph_sp_id'].appRoleId" --output tsv); do
  if [ "$attempt" -ge "$attempts" ]; then
    echo "service principal $principal_id is not readable in Microsoft Graph" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  sleep "$retry_seconds"
done

for role in GroupMember.Read.All Application.Read.All; do
  role_id=$(az rest --method get --url "$graph_sp_url" \
    --query "appRoles[?value=='$role' && contains(allowedMemberTypes, 'Application')].id | [0]" --output tsv)
  if [ -z "$role_id" ]; then
    echo "Microsoft Graph has no application role $role" >&2
    exit 1
  fi
  if printf '%s\n' "$granted" | grep -qixF "$role_id"; then
    echo "$role: already granted to $principal_id"
    continue
  fi
  if ! az rest --method post --url "$assignments_url" --headers "Content-Type=application/json" \
      --body "{\"principalId\": \"$principal_id\", \"resourceId\": \"$graph_sp_id\", \"appRoleId\": \"$role_id\"}" \
      --output none; then
    echo "could not grant $role: the signed-in user needs Privileged Role Administrator in Entra ID" \
         "(docs/permissions.md); or set AUDITOR_SKIP_GRAPH_ROLES=true and have an administrator run this script" >&2
    exit 1
  fi
  echo "$role: granted to $principal_id"
done
