// Flex Consumption plan and the Functions app (Python 3.11, v2 model) that runs the audit on its timer.
// Every setting the app reads (auditors/settings.py, Settings.ENVIRONMENT) is set here, except the ones that
// must not be set in Azure (see the comment above `resource app`; tests/test_infra.py keeps the list complete).

@description('Functions app name.')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Region of the plan and the app.')
param location string

@description('Tags of the plan and the app (the app also gets azd-service-name).')
param tags object

@description('Resource id of the user-assigned identity the app, its host and its deployment use.')
param identityId string

@description('Client id of that identity (AZURE_CLIENT_ID, AzureWebJobsStorage__clientId).')
param identityClientId string

@description('Storage account of the host, the deployment package, the spool and the evidence.')
param storageAccountName string

@description('Blob endpoint of that account, https://<account>.blob.core.windows.net/.')
param blobEndpoint string

@description('Container of the Flex deployment package.')
param deploymentContainerName string

@description('Container of the evidence archive.')
param evidenceContainerName string

@description('Container of the spool.')
param spoolContainerName string

@description('Application Insights connection string.')
param appInsightsConnectionString string

@description('Logs Ingestion endpoint of the DCR.')
param ingestionEndpoint string

@description('Immutable id of the DCR, dcr-<32 hex>.')
param dcrImmutableId string

@description('DCR stream of the findings table.')
param findingsStream string

@description('DCR stream of the runs table.')
param runsStream string

@description('Token audience of Azure Monitor.')
param logsAudience string

@description('AUDIT_SCOPE: tenant, mg:NAME or sub:ID (space-separated).')
param auditScope string

@description('AUDIT_SCHEDULE: six-field NCRONTAB of the timer.')
param auditSchedule string

@description('AUDIT_PAIRS_FILE: pairs file in the package; empty: none.')
param auditPairsFile string

@description('Microsoft Graph endpoint (https://graph.microsoft.com; sovereign clouds differ).')
param graphEndpoint string = 'https://graph.microsoft.com'

@description('Log Analytics query endpoint (https://api.loganalytics.io; sovereign clouds differ).')
param logsQueryEndpoint string = 'https://api.loganalytics.io'

@description('AUDIT_GRAPH: read group members and service principals from Microsoft Graph.')
param microsoftGraph bool

@description('AUDIT_CONTAINER_INSIGHTS: read observed image pulls from the clusters\' Log Analytics workspaces.')
param containerInsights bool

@description('Container of the exemptions file (AUDIT_EXEMPTIONS_FILE blob:<container>/exemptions.yaml).')
param configContainerName string

@description('AUDIT_SIGNING_KEY_ID: versioned Key Vault key id that signs evidence manifests; empty: hash-chained, not signed.')
param signingKeyId string

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: a zone outage delays at most one scheduled run, which the no-successful-run alert reports; zone redundancy would limit the regions.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

// App settings. Flex Consumption takes the runtime from functionAppConfig and rejects FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE, WEBSITE_CONTENTSHARE,
// WEBSITE_CONTENTAZUREFILECONNECTIONSTRING, SCM_DO_BUILD_DURING_DEPLOYMENT, ENABLE_ORYX_BUILD, WEBSITE_TIME_ZONE
// and TZ: none of them is set. Deliberately not set either (tests/test_infra.py NOT_IN_AZURE):
// - AUDIT_STORAGE_CONNECTION_STRING: shared keys are disabled; a connection string is for Azurite only;
// - AZURE_ACCESS_TOKEN, LOGS_ACCESS_TOKEN, AUDIT_STORAGE_ACCESS_TOKEN, GRAPH_ACCESS_TOKEN,
//   LOGS_QUERY_ACCESS_TOKEN, KEYVAULT_ACCESS_TOKEN: static tokens for a laptop; the identity signs in here;
// - REQUESTS_CA_BUNDLE: only public CAs are involved.
resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: azd and zip deployments reach the Flex publish endpoint over the public network; the app has no HTTP functions (one timer trigger).
  // checkov:skip=CKV_AZURE_17: the app has no HTTP functions, so no client calls it; client certificates would protect nothing.
  // checkov:skip=CKV_AZURE_212: one timer run at a time; always-ready instances would cost without making a run safer (a missed run alerts).
  // checkov:skip=CKV_AZURE_213: a health check probes an HTTP path; the app serves none (timer trigger only).
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        // One audit at a time anyway (the timer holds a blob lock); 40 is the smallest maximum Flex accepts.
        maximumInstanceCount: 40
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // Every setting of auditors/settings.py except those named above this resource.
      appSettings: [
        // Host storage through the identity: no connection string, no key.
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storageAccountName
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // DefaultAzureCredential picks the user-assigned identity.
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        // auditors/settings.py
        {
          name: 'AUDIT_SINK'
          value: 'log-analytics'
        }
        {
          name: 'LOGS_INGESTION_ENDPOINT'
          value: ingestionEndpoint
        }
        {
          name: 'LOGS_DCR_IMMUTABLE_ID'
          value: dcrImmutableId
        }
        {
          name: 'LOGS_FINDINGS_STREAM'
          value: findingsStream
        }
        {
          name: 'LOGS_RUNS_STREAM'
          value: runsStream
        }
        {
          name: 'LOGS_AUDIENCE'
          value: logsAudience
        }
        {
          name: 'LOGS_UPLOAD_WORKERS'
          value: '4'
        }
        {
          // The Functions worker runs threads: the run never forks there (its sinks are remote anyway).
          name: 'AUDIT_WORKERS'
          value: '1'
        }
        {
          name: 'LOGS_WRITE_AHEAD_ROWS'
          value: '20000'
        }
        {
          name: 'AUDIT_EVIDENCE'
          value: 'true'
        }
        {
          name: 'AUDIT_STORAGE_ACCOUNT_URL'
          value: blobEndpoint
        }
        {
          name: 'AUDIT_EVIDENCE_CONTAINER'
          value: evidenceContainerName
        }
        {
          name: 'AUDIT_SPOOL_CONTAINER'
          value: spoolContainerName
        }
        // Unused while AUDIT_STORAGE_ACCOUNT_URL is set; points at writable space if that is ever removed.
        {
          name: 'AUDIT_LOCAL_DIR'
          value: '/tmp/acr-pull-auditor'
        }
        {
          name: 'AUDIT_SPOOL_MAX_MB'
          value: '512'
        }
        // A run that has not refreshed its heartbeat for this long is taken for dead: well above the heartbeat
        // interval (20 s), well below the schedule's period.
        {
          name: 'AUDIT_SPOOL_STALE_SECONDS'
          value: '300'
        }
        {
          name: 'AZURE_ARM_ENDPOINT'
          value: environment().resourceManager
        }
        {
          name: 'AUDIT_SCOPE'
          value: auditScope
        }
        // The app folder is read-only on Flex Consumption.
        {
          name: 'AUDIT_OUT_DIR'
          value: '/tmp/acr-pull-audit'
        }
        {
          name: 'AUDIT_PAIRS_FILE'
          value: auditPairsFile
        }
        {
          name: 'AUDIT_SCHEDULE'
          value: auditSchedule
        }
        {
          name: 'AUDIT_GRAPH'
          value: microsoftGraph ? 'true' : 'false'
        }
        {
          // Sovereign clouds: environment().graph is the Azure AD Graph endpoint, not Microsoft Graph.
          name: 'AUDIT_GRAPH_ENDPOINT'
          value: graphEndpoint
        }
        {
          name: 'AUDIT_DENY_ASSIGNMENTS'
          value: 'true'
        }
        {
          name: 'AUDIT_CONTAINER_INSIGHTS'
          value: containerInsights ? 'true' : 'false'
        }
        {
          name: 'AUDIT_LOGS_QUERY_ENDPOINT'
          value: logsQueryEndpoint
        }
        {
          name: 'AUDIT_PULL_LOOKBACK'
          value: 'P1D'
        }
        {
          // A blob in the auditor's own storage account, replaced by the approvers (docs/permissions.md).
          name: 'AUDIT_EXEMPTIONS_FILE'
          value: 'blob:${configContainerName}/exemptions.yaml'
        }
        {
          name: 'AUDIT_EXEMPTION_MAX_DAYS'
          value: '365'
        }
        {
          name: 'AUDIT_CREDENTIAL_WARN_DAYS'
          value: '30'
        }
        {
          name: 'AUDIT_SIGNING_KEY_ID'
          value: signingKeyId
        }
      ]
    }
  }
}

// Deployments (azd, zip deploy) authenticate with Entra ID; basic (user name and password) publishing is off.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

output name string = app.name
output id string = app.id
