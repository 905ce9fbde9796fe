// Key Vault holding the key that signs evidence manifests (AUDIT_SIGNING_KEY_ID). The WORM container keeps
// evidence from being changed in place; a signature also proves, for an exported copy outside the account,
// that the auditor's identity produced the manifest, with a key that never leaves the vault.
//
// Access is Azure RBAC only (no access policies). One principal gets one role: the auditor's identity has Key
// Vault Crypto User on the signing key alone, and the key's keyOps limit it to sign and verify, so the role's
// encrypt/decrypt/wrap rights have nothing to act on. Nobody who can write the storage account (the deployer,
// exemption approvers) gets a role here, so changing evidence does not come with the means to re-sign it.
// Sign operations are logged to the workspace (AZKVAuditLogs), so a signature made outside a run shows up there.

@description('Key Vault name (3-24 letters, digits and hyphens).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the vault.')
param location string

@description('Tags of the vault.')
param tags object

@description('Principal (object) id of the auditor identity, allowed to sign with the key.')
param principalId string

@description('Resource id of the Log Analytics workspace that receives the vault\'s audit log.')
param workspaceResourceId string

var signingKeyName = 'evidence-manifest-signing'
var keyVaultCryptoUserRoleId = '12338af0-0e69-4776-bea7-57ae8d297424'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: like the storage account, the Flex Consumption app has no VNet integration and reaches the vault over its public endpoint; RBAC admits one principal, for sign and verify on one key.
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109: public network access stays enabled for the Functions app; there are no access policies and no secrets.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // Deleting the vault or the key would leave past signatures unverifiable against Key Vault; purge protection
    // keeps both recoverable for the retention period (and reserves the vault name that long after `azd down`).
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Resource Manager creates the first version of a key and leaves an existing key as it is on redeployment, so
// the versioned id the app signs with stays the same until someone adds a version on purpose.
resource signingKey 'Microsoft.KeyVault/vaults/keys@2023-07-01' = {
  // checkov:skip=CKV_AZURE_40: an expiry date would stop signing on that day (the run fails) while the manifests signed before must stay verifiable for the whole evidence retention; rotate by adding a key version and redeploying.
  // checkov:skip=CKV_AZURE_112: ES256 with a software-protected key (standard vault): Key Vault never exports its private part; an HSM key (premium vault, kty EC-HSM) is a one-line change where FIPS 140-3 Level 3 is required.
  parent: vault
  name: signingKeyName
  properties: {
    kty: 'EC'
    curveName: 'P-256'
    keyOps: [
      'sign'
      'verify'
    ]
    attributes: {
      enabled: true
    }
  }
}

resource signer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(signingKey.id, principalId, keyVaultCryptoUserRoleId)
  scope: signingKey
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultCryptoUserRoleId)
    description: 'acr-pull-auditor: sign evidence manifests with this key'
  }
}

resource auditLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-workspace'
  scope: vault
  properties: {
    workspaceId: workspaceResourceId
    logAnalyticsDestinationType: 'Dedicated' // resource-specific table AZKVAuditLogs rather than AzureDiagnostics
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output signingKeyId string = signingKey.properties.keyUriWithVersion
