// acr-pull-auditor: the scheduled auditor (Flex Consumption Functions app) and everything it reports into.
//
// Deployed by `azd up` (azure.yaml at the repository root) at subscription scope: it creates the resource group
// and deploys the modules under modules/. Two grants are NOT in this template: the auditor identity's read roles
// at the management group it audits (the tenant root group by default; outside any resource group) and its
// Microsoft Graph application roles (an Entra ID change that needs Entra rights). azd's postprovision hook makes
// both (azure.yaml; hooks/grant-graph-app-roles.*); docs/permissions.md lists every permission and who grants it.
//
// The custom tables and the DCR stream declarations come from ../auditors/sinks/log_analytics_tables.json,
// which is generated from the Python code (auditors/sinks/tables.py): no column is typed in Bicep.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; part of every resource name and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region of the resource group and of every resource (a region where Flex Consumption is offered).')
param location string

@description('Resource group name; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Resource id of an existing Log Analytics workspace to report into; empty: create one.')
param existingWorkspaceResourceId string = ''

@minValue(30)
@maxValue(730)
@description('Retention (days) of a workspace this template creates, and interactive retention of the two tables.')
param logRetentionDays int = 90

@minValue(1)
@maxValue(146000)
@description('Time-based immutability of the evidence container: days each evidence blob stays undeletable.')
param evidenceRetentionDays int = 365

@allowed([
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
@description('Replication of the storage account that holds the evidence archive (geo-redundant), the spool and the package.')
param storageSkuName string = 'Standard_GRS'

@description('Management group the auditor audits and gets Reader on; empty: the tenant root group (the tenant id).')
param auditManagementGroupId string = ''

@description('AUDIT_SCOPE of the app; empty: `tenant`, or `mg:<auditManagementGroupId>` when that is set.')
param auditScope string = ''

@description('Six-field NCRONTAB schedule of the audit timer (AUDIT_SCHEDULE); keep in step with schedulePeriodHours.')
param auditSchedule string = '0 0 */6 * * *'

@minValue(1)
@maxValue(24)
@description('Hours between two scheduled runs (from auditSchedule); the "no successful run" alert waits two periods.')
param schedulePeriodHours int = 6

@description('Pairs file (AUDIT_PAIRS_FILE) shipped in the app package, relative to the app root; empty: none.')
param auditPairsFile string = ''

@description('Token audience of Azure Monitor for the Logs Ingestion API (LOGS_AUDIENCE); differs in sovereign clouds.')
param logsAudience string = 'https://monitor.azure.com'

@description('E-mail address of the security team: failed or silent runs, coverage drops, findings of unmapped owners.')
param securityTeamEmail string

@description('Owners whose High/Critical Fail findings go to their own action group: [{owner: \'team-payments\', email: \'payments@example.com\'}].')
param ownerActionGroups array = []

@minValue(1)
@maxValue(100)
@description('Alert when a run covers less than this percentage of the most subscriptions a run saw in the look-back.')
param coverageThresholdPercent int = 90

@description('Read group members and service principals from Microsoft Graph (AUDIT_GRAPH); the hook grants the Graph roles only when on.')
param microsoftGraph bool = true

@description('Read observed image pulls from Container Insights (AUDIT_CONTAINER_INSIGHTS); the hook grants Log Analytics Reader only when on.')
param containerInsights bool = true

@description('Sign evidence manifests with an EC P-256 key in a Key Vault created here (AUDIT_SIGNING_KEY_ID); off: hash-chained only.')
param manifestSigning bool = true

@description('Object id of the Entra ID group allowed to replace the exemptions file (config/exemptions.yaml); empty: nobody but the auditor.')
param exemptionApproversGroupId string = ''

@description('Tags added to every resource.')
param tags object = {}

var abbreviations = {
  resourceGroup: 'rg-'
  identity: 'id-'
  storage: 'st'
  plan: 'plan-'
  functionApp: 'func-'
  workspace: 'log-'
  appInsights: 'appi-'
  dataCollectionRule: 'dcr-'
  keyVault: 'kv-'
}
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var allTags = union(tags, { 'azd-env-name': environmentName })
var createWorkspace = empty(existingWorkspaceResourceId)
// /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.OperationalInsights/workspaces/<name>
var existingWorkspaceParts = split(existingWorkspaceResourceId, '/')
var workspaceSubscriptionId = createWorkspace ? subscription().subscriptionId : (existingWorkspaceParts[2])
var workspaceResourceGroupName = createWorkspace ? rg.name : (existingWorkspaceParts[4])
var workspaceName = createWorkspace ? '${abbreviations.workspace}${resourceToken}' : last(existingWorkspaceParts)
var readerManagementGroupId = empty(auditManagementGroupId) ? tenant().tenantId : auditManagementGroupId
var effectiveAuditScope = !empty(auditScope) ? auditScope : (empty(auditManagementGroupId) ? 'tenant' : 'mg:${auditManagementGroupId}')

// The single source of the two custom tables: table name, DCR stream name and columns.
var schema = loadJsonContent('../auditors/sinks/log_analytics_tables.json')

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbreviations.resourceGroup}${environmentName}'
  location: location
  tags: allTags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbreviations.identity}${resourceToken}'
    location: location
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbreviations.storage}${resourceToken}'
    location: location
    tags: allTags
    skuName: storageSkuName
    evidenceRetentionDays: evidenceRetentionDays
    principalId: identity.outputs.principalId
    exemptionApproversGroupId: exemptionApproversGroupId
  }
}

module logAnalytics 'modules/log-analytics.bicep' = {
  name: 'log-analytics'
  scope: resourceGroup(workspaceSubscriptionId, workspaceResourceGroupName)
  params: {
    createWorkspace: createWorkspace
    name: workspaceName
    location: location
    tags: allTags
    retentionInDays: logRetentionDays
    tables: schema.tables
  }
  dependsOn: [
    rg // the scope names it through a variable; a new workspace goes into it
  ]
}

module appInsights 'modules/app-insights.bicep' = {
  name: 'app-insights'
  scope: rg
  params: {
    name: '${abbreviations.appInsights}${resourceToken}'
    location: location
    tags: allTags
    workspaceResourceId: logAnalytics.outputs.id
    principalId: identity.outputs.principalId
  }
}

module dataCollectionRule 'modules/data-collection-rule.bicep' = {
  name: 'data-collection-rule'
  scope: rg
  params: {
    name: '${abbreviations.dataCollectionRule}${resourceToken}'
    location: logAnalytics.outputs.location
    tags: allTags
    workspaceResourceId: logAnalytics.outputs.id
    tables: schema.tables
    principalId: identity.outputs.principalId
  }
}

module signing 'modules/key-vault.bicep' = if (manifestSigning) {
  name: 'signing'
  scope: rg
  params: {
    name: '${abbreviations.keyVault}${resourceToken}'
    location: location
    tags: allTags
    principalId: identity.outputs.principalId
    workspaceResourceId: logAnalytics.outputs.id
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: '${abbreviations.functionApp}${resourceToken}'
    planName: '${abbreviations.plan}${resourceToken}'
    location: location
    tags: allTags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    evidenceContainerName: storage.outputs.evidenceContainerName
    spoolContainerName: storage.outputs.spoolContainerName
    appInsightsConnectionString: appInsights.outputs.connectionString
    ingestionEndpoint: dataCollectionRule.outputs.logsIngestionEndpoint
    dcrImmutableId: dataCollectionRule.outputs.immutableId
    findingsStream: dataCollectionRule.outputs.findingsStream
    runsStream: dataCollectionRule.outputs.runsStream
    logsAudience: logsAudience
    auditScope: effectiveAuditScope
    auditSchedule: auditSchedule
    auditPairsFile: auditPairsFile
    microsoftGraph: microsoftGraph
    containerInsights: containerInsights
    configContainerName: storage.outputs.configContainerName
    // ARM evaluates only the chosen branch, so the module's output is read only when the module is deployed.
    signingKeyId: manifestSigning ? signing.outputs.signingKeyId : ''
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: allTags
    workspaceResourceId: logAnalytics.outputs.id
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: logAnalytics.outputs.location
    tags: allTags
    workspaceResourceId: logAnalytics.outputs.id
    securityTeamEmail: securityTeamEmail
    ownerActionGroups: ownerActionGroups
    schedulePeriodHours: schedulePeriodHours
    coverageThresholdPercent: coverageThresholdPercent
  }
}

// azd stores these in the environment (.azure/<env>/.env); the postprovision hook reads AZURE_LOCATION,
// AUDITOR_PRINCIPAL_ID, AUDIT_READER_MANAGEMENT_GROUP_ID, AUDIT_GRAPH and AUDIT_CONTAINER_INSIGHTS.
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_LOG_ANALYTICS_WORKSPACE_ID string = logAnalytics.outputs.id
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output LOGS_DCR_IMMUTABLE_ID string = dataCollectionRule.outputs.immutableId
output LOGS_INGESTION_ENDPOINT string = dataCollectionRule.outputs.logsIngestionEndpoint
output AUDITOR_CLIENT_ID string = identity.outputs.clientId
output AUDITOR_PRINCIPAL_ID string = identity.outputs.principalId
output AUDIT_READER_MANAGEMENT_GROUP_ID string = readerManagementGroupId
output AUDIT_GRAPH string = microsoftGraph ? 'true' : 'false'
output AUDIT_CONTAINER_INSIGHTS string = containerInsights ? 'true' : 'false'
output AUDIT_SIGNING_KEY_ID string = manifestSigning ? signing.outputs.signingKeyId : ''
