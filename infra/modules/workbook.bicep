// The "ACR pull audit" workbook, stored beside the workspace it reads. Its content is
// ../workbook/acr-pull-audit.workbook.json (kept pretty-printed there; tests/test_infra.py validates its
// structure and every query in it).

@description('Region of the workbook resource.')
param location string

@description('Tags of the workbook.')
param tags object

@description('Resource id of the Log Analytics workspace the workbook queries.')
param workspaceResourceId string

// The JSON names the workspace as __WORKSPACE_RESOURCE_ID__ (its fallback resource when opened from the
// gallery); resource ids contain nothing that needs escaping in JSON.
var serializedData = replace(loadTextContent('../workbook/acr-pull-audit.workbook.json'), '__WORKSPACE_RESOURCE_ID__', workspaceResourceId)

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'acr-pull-audit-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'ACR pull audit'
    category: 'workbook'
    sourceId: workspaceResourceId
    serializedData: serializedData
    version: 'Notebook/1.0'
  }
}

output id string = workbook.id
