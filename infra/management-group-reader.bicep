// Read access for the auditor's identity at the management group it audits (the tenant root group, whose id is
// the tenant id, by default):
// - Reader: Resource Graph returns only what the caller may read, and role assignments above a subscription live
//   at management-group scope, so the auditor needs Reader there to see the whole estate. Its `*/read` also
//   covers `Microsoft.Authorization/denyAssignments/read`, which listing deny assignments needs.
// - Log Analytics Reader (when grantLogAnalyticsReader): query the clusters' Container Insights workspaces
//   (KubeEvents, ContainerInventory) for observed image pulls. Whether Reader's `*/read` already matches
//   `Microsoft.OperationalInsights/workspaces/query/read` is not verified; this role grants it explicitly. It
//   reads every table of every workspace below the management group (docs/permissions.md).
//
// A management-group assignment is outside any resource group, so main.bicep cannot make it. azd's
// postprovision hook (azure.yaml) deploys this file after `azd provision`, with main.bicep's outputs:
//
//   az deployment mg create --name acr-pull-auditor-reader --management-group-id <AUDIT_READER_MANAGEMENT_GROUP_ID> \
//     --location <AZURE_LOCATION> --template-file infra/management-group-reader.bicep \
//     --parameters principalId=<AUDITOR_PRINCIPAL_ID> grantLogAnalyticsReader=<AUDIT_CONTAINER_INSIGHTS>
//
// The signed-in `az` user needs Owner, User Access Administrator or Role Based Access Control Administrator at
// that management group (at the tenant root group this usually means elevated access). Deployments are
// incremental: setting grantLogAnalyticsReader to false later does not remove an existing assignment.
targetScope = 'managementGroup'

@description('Principal (object) id of the auditor\'s user-assigned managed identity (main.bicep output AUDITOR_PRINCIPAL_ID).')
param principalId string

@description('Grant Log Analytics Reader for Container Insights (main.bicep output AUDIT_CONTAINER_INSIGHTS).')
param grantLogAnalyticsReader bool = true

var readerRoleId = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
var logAnalyticsReaderRoleId = '73c42c96-874c-492b-b04d-ab87d138a893'

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(managementGroup().id, principalId, readerRoleId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: tenantResourceId('Microsoft.Authorization/roleDefinitions', readerRoleId)
    description: 'acr-pull-auditor: read clusters, registries, networks, role and deny assignments'
  }
}

resource logAnalyticsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantLogAnalyticsReader) {
  name: guid(managementGroup().id, principalId, logAnalyticsReaderRoleId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: tenantResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsReaderRoleId)
    description: 'acr-pull-auditor: query Container Insights (KubeEvents, ContainerInventory) for observed image pulls'
  }
}

output roleAssignmentId string = reader.id
output logAnalyticsReaderAssignmentId string = grantLogAnalyticsReader ? logAnalyticsReader.id : ''
