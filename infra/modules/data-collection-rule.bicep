// Data collection rule (kind Direct: its own Logs Ingestion endpoint, no DCE) that takes the auditor's two
// streams into the two custom tables, and the auditor's right to send to it.

@description('DCR name.')
param name string

@description('Region: the workspace\'s (a DCR and its Log Analytics destination must share a region).')
param location string

@description('Tags of the DCR.')
param tags object

@description('Resource id of the destination workspace.')
param workspaceResourceId string

@description('The `tables` array of auditors/sinks/log_analytics_tables.json: table, stream, columns.')
param tables array

@description('Principal (object) id of the auditor identity, allowed to send to this DCR.')
param principalId string

var destinationName = 'auditWorkspace'
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'
// The transform's input table is `source`, with the stream's columns. Findings arrive as wire rows that leave out
// the columns a reader derives; their transform (generated from the code, see auditors/sinks/tables.py) puts them back.
var transformKql = loadTextContent('../dcr/transform.kql')
var findingsTransformKql = loadTextContent('../dcr/findings-transform.kql')

// streamDeclarations is an object keyed by stream name. It is built as JSON text from the tables array because
// the Bicep parser that checkov uses cannot read lambdas (toObject); columns keep the stream type spelling.
var streamDeclarationEntries = [for t in tables: '"${t.stream}": {"columns": ${string(t.columns)}}']
var streamDeclarations = json('{${join(streamDeclarationEntries, ', ')}}')
// The app's LOGS_FINDINGS_STREAM / LOGS_RUNS_STREAM, picked by table name (no filter() without lambdas either).
var findingsStreamMatches = [for t in tables: (t.table == 'AcrPullAudit_CL') ? t.stream : '']
var runsStreamMatches = [for t in tables: (t.table == 'AcrPullAuditRuns_CL') ? t.stream : '']

resource dcr 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: name
  location: location
  tags: tags
  kind: 'Direct'
  properties: {
    description: 'acr-pull-auditor findings and run rows, sent through the Logs Ingestion API'
    streamDeclarations: streamDeclarations
    destinations: {
      logAnalytics: [
        {
          name: destinationName
          workspaceResourceId: workspaceResourceId
        }
      ]
    }
    dataFlows: [for t in tables: {
      streams: [
        t.stream
      ]
      destinations: [
        destinationName
      ]
      transformKql: (t.table == 'AcrPullAudit_CL') ? findingsTransformKql : transformKql
      outputStream: 'Custom-${t.table}'
    }]
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dcr.id, principalId, monitoringMetricsPublisherRoleId)
  scope: dcr
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    description: 'acr-pull-auditor: send findings and run rows through the Logs Ingestion API'
  }
}

output id string = dcr.id
output immutableId string = dcr.properties.immutableId
output logsIngestionEndpoint string = dcr.properties.endpoints.logsIngestion
output findingsStream string = join(findingsStreamMatches, '')
output runsStream string = join(runsStreamMatches, '')
