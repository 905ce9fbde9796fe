// Log Analytics workspace (created here, or an existing one) and the auditor's custom tables in it.
// Deployed into the workspace's resource group, which for an existing workspace may be another team's.

@description('true: create the workspace; false: use the existing workspace of this name in this resource group.')
param createWorkspace bool

@description('Workspace name.')
param name string

@description('Region of a workspace created here.')
param location string

@description('Tags of a workspace created here.')
param tags object

@description('Retention (days) of a workspace created here, and interactive retention of the tables.')
param retentionInDays int

@description('The `tables` array of auditors/sinks/log_analytics_tables.json: table, stream, columns.')
param tables array

resource createdWorkspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = if (createWorkspace) {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource existingWorkspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: name
}

// One module per table: the column type spelling differs between DCR streams (`datetime`) and tables
// (`dateTime`), and Bicep cannot nest the column loop inside a table loop.
module table 'log-analytics-table.bicep' = [for t in tables: {
  name: 'table-${t.table}'
  params: {
    workspaceName: name
    tableName: t.table
    columns: t.columns
    retentionInDays: retentionInDays
  }
  dependsOn: [
    createdWorkspace
  ]
}]

output id string = createWorkspace ? createdWorkspace.id : (existingWorkspace.id)
output name string = name
// ARM evaluates only the chosen branch of a condition, so an existing workspace is read only when one is used.
output location string = createWorkspace ? location : (existingWorkspace.location)
output tableNames array = [for (t, i) in tables: table[i].outputs.name]
