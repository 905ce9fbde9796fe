// Workspace-based Application Insights for the Functions host and the app's logs. Local (instrumentation key)
// authentication is disabled: the host sends telemetry with the auditor identity
// (APPLICATIONINSIGHTS_AUTHENTICATION_STRING), which needs Monitoring Metrics Publisher on this component.

@description('Component name.')
param name string

@description('Region of the component.')
param location string

@description('Tags of the component.')
param tags object

@description('Resource id of the Log Analytics workspace the telemetry is stored in.')
param workspaceResourceId string

@description('Principal (object) id of the auditor identity, allowed to publish telemetry.')
param principalId string

var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

resource component 'Microsoft.Insights/components@2020-02-02' = {
  name: name
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspaceResourceId
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
  }
}

resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(component.id, principalId, monitoringMetricsPublisherRoleId)
  scope: component
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    description: 'acr-pull-auditor: Entra ID authenticated telemetry of the Functions app'
  }
}

output id string = component.id
output name string = component.name
output connectionString string = component.properties.ConnectionString
