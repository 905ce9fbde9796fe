// One custom table (Analytics plan) with the columns of its DCR stream declaration.

@description('Name of the workspace that holds the table.')
param workspaceName string

@description('Table name, ending in _CL.')
param tableName string

@description('Columns as in auditors/sinks/log_analytics_tables.json: [{name, type}] with DCR stream types.')
param columns array

@description('Interactive (and total) retention in days.')
param retentionInDays int

// Stream declarations spell the type `datetime`; the tables API documents `dateTime`. Other types are the same.
var tableColumns = [for c in columns: {
  name: c.name
  type: (c.type == 'datetime') ? 'dateTime' : (c.type)
}]

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource table 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = {
  parent: workspace
  name: tableName
  properties: {
    plan: 'Analytics'
    retentionInDays: retentionInDays
    totalRetentionInDays: retentionInDays
    schema: {
      name: tableName
      columns: tableColumns
    }
  }
}

output name string = table.name
