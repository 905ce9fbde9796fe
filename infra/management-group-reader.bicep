// Reader for the auditor's identity at the management group it audits (the tenant root group, whose id is the
// tenant id, by default). Resource Graph returns only what the caller may read, and role assignments above a
// subscription live at management-group scope, so the auditor needs Reader there to see the whole estate.
//
// A management-group assignment is outside any resource group, so main.bicep cannot make it. azd's
// postprovision hook (azure.yaml) deploys this file after `azd provision`, with main.bicep's outputs:
//
//   az deployment mg create --name acr-pull-auditor-reader --management-group-id <AUDIT_READER_MANAGEMENT_GROUP_ID> \
//     --location <AZURE_LOCATION> --template-file infra/management-group-reader.bicep \
//     --parameters principalId=<AUDITOR_PRINCIPAL_ID>
//
// The signed-in `az` user needs Owner, User Access Administrator or Role Based Access Control Administrator at
// that management group (at the tenant root group this usually means elevated access).
targetScope = 'managementGroup'

@description('Principal (object) id of the auditor\'s user-assigned managed identity (main.bicep output AUDITOR_PRINCIPAL_ID).')
param principalId string

var readerRoleId = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(managementGroup().id, principalId, readerRoleId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: tenantResourceId('Microsoft.Authorization/roleDefinitions', readerRoleId)
    description: 'acr-pull-auditor: read clusters, registries, networks and role assignments through Resource Graph'
  }
}

output roleAssignmentId string = reader.id
