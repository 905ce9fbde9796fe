# Grants the auditor's managed identity the Microsoft Graph application roles it reads with:
#   GroupMember.Read.All  - the service principals inside groups that hold pull roles
#   Application.Read.All  - a cluster service principal's application and its credentials' end dates
# Usage: pwsh infra/hooks/grant-graph-app-roles.ps1 <AUDITOR_PRINCIPAL_ID>
# The Windows twin of grant-graph-app-roles.sh (same calls, same checks); see there for the rights it needs.
# The request body goes through a file: Windows PowerShell mangles double quotes in native arguments.
param(
    [Parameter(Mandatory = $true)][string]$PrincipalId
)
$ErrorActionPreference = 'Stop'

$graphAppId = '00000003-0000-0000-c000-000000000000'
# Attempts while a new identity's service principal is not yet visible in Microsoft Graph (replication).
$attempts = 6
$retrySeconds = if ($env:AUDITOR_GRAPH_RETRY_SECONDS) { [int]$env:AUDITOR_GRAPH_RETRY_SECONDS } else { 20 }

$graphResource = az cloud show --query endpoints.microsoftGraphResourceId --output tsv
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
$graph = $graphResource.TrimEnd('/') + '/v1.0'
$graphSpUrl = "$graph/servicePrincipals(appId='$graphAppId')"
$assignmentsUrl = "$graph/servicePrincipals/$PrincipalId/appRoleAssignments"

$graphSpId = az rest --method get --url $graphSpUrl --query id --output tsv
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

for ($attempt = 1; ; $attempt++) {
    $granted = @(az rest --method get --url $assignmentsUrl --query "value[?resourceId=='$graphSpId'].appRoleId" --output tsv)
    if ($LASTEXITCODE -eq 0) { break }
    if ($attempt -ge $attempts) {
        Write-Error "service principal $PrincipalId is not readable in Microsoft Graph"
        exit 1
    }
    Start-Sleep -Seconds $retrySeconds
}

foreach ($role in 'GroupMember.Read.All', 'Application.Read.All') {
    $roleId = az rest --method get --url $graphSpUrl --query "appRoles[?value=='$role' && contains(allowedMemberTypes, 'Application')].id | [0]" --output tsv
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    if (-not $roleId) {
        Write-Error "Microsoft Graph has no application role $role"
        exit 1
    }
    if ($granted -contains $roleId) {
        Write-Host "${role}: already granted to $PrincipalId"
        continue
    }
    $body = New-TemporaryFile
    try {
        @{ principalId = $PrincipalId; resourceId = $graphSpId; appRoleId = $roleId } | ConvertTo-Json | Set-Content -Path $body -Encoding utf8
        az rest --method post --url $assignmentsUrl --headers 'Content-Type=application/json' --body "@$body" --output none
        if ($LASTEXITCODE -ne 0) {
            Write-Error ("could not grant ${role}: the signed-in user needs Privileged Role Administrator in Entra ID " +
                "(docs/permissions.md); or set AUDITOR_SKIP_GRAPH_ROLES=true and have an administrator run this script")
            exit 1
        }
    }
    finally {
        Remove-Item -Path $body -ErrorAction SilentlyContinue
    }
    Write-Host "${role}: granted to $PrincipalId"
}
