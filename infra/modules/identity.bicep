// User-assigned managed identity of the auditor: the Functions host (AzureWebJobsStorage, deployment package),
// the app's DefaultAzureCredential (AZURE_CLIENT_ID: Resource Graph, Logs Ingestion, Blob Storage) and
// Application Insights (Entra ID authenticated telemetry) all use it. A user-assigned identity keeps its
// principal id when the app is re-created, so its role assignments (including the management-group Reader
// granted outside this deployment) survive.

@description('Name of the identity.')
param name string

@description('Region of the identity.')
param location string

@description('Tags of the identity.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
