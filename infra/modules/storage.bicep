// Storage account of the auditor: the Functions host (AzureWebJobsStorage, identity-based), the Flex deployment
// package, the spool of rows not yet delivered, the evidence archive under a time-based immutability policy, and
// `config` with the exemptions file (AUDIT_EXEMPTIONS_FILE), which approvers replace and so is not immutable.
// Shared keys are disabled: every client (host, deployment, app, approvers with `--auth-mode login`) uses Entra ID.

@description('Storage account name (3-24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the account.')
param location string

@description('Tags of the account.')
param tags object

@allowed([
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
@description('Replication: geo-redundant, because the account holds the audit evidence.')
param skuName string

@description('Days each evidence blob stays undeletable and unmodifiable after it is written.')
param evidenceRetentionDays int

@description('Principal (object) id of the auditor identity, granted data access to the blobs.')
param principalId string

@description('Object id of the Entra ID group allowed to replace the exemptions file in `config`; empty: nobody but the auditor.')
param exemptionApproversGroupId string

var deploymentContainerName = 'deployment'
var spoolContainerName = 'spool'
var evidenceContainerName = 'evidence'
var configContainerName = 'config'

// Storage Blob Data Owner (b7e6dc6d-f1e8-4753-8033-0f276bb0955b) at the account. Why this role and scope:
// - The Functions host with identity-based AzureWebJobsStorage creates its containers (azure-webjobs-hosts,
//   azure-webjobs-secrets), takes blob leases (singleton and timer locks) and writes timer status; the Flex
//   deployment reads and writes the package in `deployment`; the app creates `spool`/`evidence` if missing,
//   writes create-only blobs, deletes delivered spool entries and reads `config/exemptions.yaml`. Creating
//   containers needs the account scope.
// - Microsoft documents Storage Blob Data Owner as the role for host storage and the Flex Consumption samples
//   use it. Storage Blob Data Contributor covers every operation listed above; Owner adds only POSIX ACL and
//   ownership management (hierarchical namespace, not enabled here) and blob tags. Nobody has shown offline that
//   the host starts with Contributor, so this template uses the documented role; switching to Contributor
//   (ba92f5b4-2d11-453d-a403-e96b0029c9fe) is a one-line change to try on a live deployment.
// - No queue, table or file role: the timer trigger on Flex Consumption uses blobs only, and the plan has no
//   content file share.
// - Neither data role can remove the evidence container's immutability policy (a control-plane action), and
//   while the policy holds, no principal can delete or overwrite evidence blobs.
var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Storage Blob Data Contributor (ba92f5b4-2d11-453d-a403-e96b0029c9fe) on the `config` container only: the
// approvers read, replace and delete the exemptions file and nothing else; a group, so that membership (or PIM
// for Groups) decides who may approve, not this template.
var storageBlobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches host storage over the public endpoint; shared keys are disabled, so only Entra ID principals with data roles get in.
  // checkov:skip=CKV_AZURE_206: sku.name is the skuName parameter, which @allowed limits to geo-redundant SKUs (default Standard_GRS); checkov cannot resolve a module parameter.
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: public network access stays enabled for the Functions host; anonymous blob access and shared keys are disabled.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // Soft delete recovers a deleted package or spool entry for a week. Versioning stays off: evidence is
    // create-only under WORM, spool entries are transient (versions would keep every delivered entry), and the
    // deployment package is rebuilt from source.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    isVersioningEnabled: false
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource spoolContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: spoolContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource evidenceContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: evidenceContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Not under an immutability policy: the exemptions file is replaced whenever an exemption is approved or ends.
// Each run records the SHA-256 of the file it evaluated (ExemptionsSha256) in its hash-chained evidence.
resource configContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: configContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Container-level time-based retention (WORM): every evidence blob can be read but neither modified nor deleted
// until it is evidenceRetentionDays old. The policy is created unlocked; lock it once the period is confirmed
// (`az storage container immutability-policy lock`), after which it can only be extended. Note: a container
// holding protected blobs, and so this account and its resource group, cannot be deleted (`azd down`) before
// the period ends.
resource evidenceImmutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = {
  parent: evidenceContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: evidenceRetentionDays
    allowProtectedAppendWrites: false
    allowProtectedAppendWritesAll: false
  }
}

resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, storageBlobDataOwnerRoleId)
  scope: account
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    description: 'acr-pull-auditor: Functions host storage, deployment package, spool and evidence blobs'
  }
}

resource exemptionApprovers 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(exemptionApproversGroupId)) {
  name: guid(configContainer.id, exemptionApproversGroupId, storageBlobDataContributorRoleId)
  scope: configContainer
  properties: {
    principalId: exemptionApproversGroupId
    principalType: 'Group'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    description: 'acr-pull-auditor: exemption approvers replace config/exemptions.yaml'
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output deploymentContainerName string = deploymentContainer.name
output spoolContainerName string = spoolContainer.name
output evidenceContainerName string = evidenceContainer.name
output configContainerName string = configContainer.name
