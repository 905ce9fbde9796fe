// Action groups and log search alerts on the auditor's tables. Each query is a file under ../alerts/ so that
// tests/test_infra.py validates it with the Kusto language service against the real table schemas.
//
// Routing of new High/Critical Fail findings: one rule per owner in ownerActionGroups (Owner dimension included
// for that owner only, that owner's action group), plus one catch-all rule for every other owner, including
// findings without an owner tag (Owner "(none)"), to the security team. Run health (failed run, no successful
// run, coverage drop) goes to the security team.

@description('Region of the alert rules (the workspace\'s).')
param location string

@description('Tags of the action groups and rules.')
param tags object

@description('Resource id of the Log Analytics workspace with the auditor\'s tables.')
param workspaceResourceId string

@description('E-mail address of the security team.')
param securityTeamEmail string

@description('[{owner: \'team-payments\', email: \'payments@example.com\'}]: owners with their own action group.')
param ownerActionGroups array

@description('Hours between two scheduled runs; the "no successful run" rule waits two periods.')
param schedulePeriodHours int

@description('Alert when a run covers less than this percentage of the recent maximum of subscriptions.')
param coverageThresholdPercent int

var highFailByOwnerQuery = loadTextContent('../alerts/high-fail-by-owner.kql')
var runFailedQuery = loadTextContent('../alerts/run-failed.kql')
var noSuccessfulRunQuery = loadTextContent('../alerts/no-successful-run.kql')
var coverageDropQuery = loadTextContent('../alerts/coverage-drop.kql')
var mappedOwners = [for o in ownerActionGroups: o.owner]
// The catch-all rule's Owner dimension: every owner without an action group of its own.
var otherOwners = empty(mappedOwners) ? {
  name: 'Owner'
  operator: 'Include'
  values: [
    '*'
  ]
} : {
  name: 'Owner'
  operator: 'Exclude'
  values: mappedOwners
}
// Two schedule periods: one run may be late or lost without an alert; two in a row may not.
var silenceWindow = 'PT${2 * schedulePeriodHours}H'

resource securityTeam 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-acr-pull-audit-security'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'acraudit-sec'
    enabled: true
    emailReceivers: [
      {
        name: 'security-team'
        emailAddress: securityTeamEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource ownerGroups 'Microsoft.Insights/actionGroups@2023-01-01' = [for (o, i) in ownerActionGroups: {
  name: 'ag-acr-pull-audit-owner-${i}'
  location: 'global'
  tags: union(tags, { owner: o.owner })
  properties: {
    groupShortName: 'acraudit-${i}'
    enabled: true
    emailReceivers: [
      {
        name: 'owner-${i}'
        emailAddress: o.email
        useCommonAlertSchema: true
      }
    ]
  }
}]

resource ownerHighFail 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for (o, i) in ownerActionGroups: {
  name: 'acr-pull-audit-high-fail-owner-${i}'
  location: location
  tags: union(tags, { owner: o.owner })
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: new High/Critical failures of ${o.owner}'
    description: 'Findings of owner ${o.owner} that fail at High or Critical severity in the latest audit run and did not fail in the run before it. Remediation is in the finding (workbook "ACR pull audit", Findings tab).'
    severity: 1
    enabled: true
    scopes: [
      workspaceResourceId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: highFailByOwnerQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'NewFailures'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'Owner'
              operator: 'Include'
              values: [
                o.owner
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        (ownerGroups[i].id) // parenthesised for tree-sitter-bicep, which splits `a[i]` in an array into two items
      ]
      customProperties: {
        owner: o.owner
        source: 'acr-pull-auditor'
      }
    }
  }
}]

resource unmappedHighFail 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'acr-pull-audit-high-fail-other-owners'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: new High/Critical failures of other owners'
    description: 'New High or Critical Fail findings whose owner has no action group of its own, or that carry no owner tag (Owner "(none)").'
    severity: 1
    enabled: true
    scopes: [
      workspaceResourceId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: highFailByOwnerQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'NewFailures'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            otherOwners
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        securityTeam.id
      ]
      customProperties: {
        source: 'acr-pull-auditor'
      }
    }
  }
}

resource runFailed 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'acr-pull-audit-run-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: run failed'
    description: 'An audit run ended with RunStatus Failed; its Errors column says why (workbook, Run health tab).'
    severity: 1
    enabled: true
    scopes: [
      workspaceResourceId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: runFailedQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'FailedRuns'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        securityTeam.id
      ]
      customProperties: {
        source: 'acr-pull-auditor'
      }
    }
  }
}

resource noSuccessfulRun 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'acr-pull-audit-no-successful-run'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: no successful run in ${2 * schedulePeriodHours} hours'
    description: 'No audit run succeeded within two schedule periods: the timer, the app, the collection or the delivery is broken, or every run is Incomplete.'
    severity: 1
    enabled: true
    scopes: [
      workspaceResourceId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: silenceWindow
    // Stateful: fires once while runs stay missing, resolves after the next successful run.
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: noSuccessfulRunQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'SucceededRuns'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        securityTeam.id
      ]
      customProperties: {
        source: 'acr-pull-auditor'
      }
    }
  }
}

resource coverageDrop 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'acr-pull-audit-coverage-drop'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: coverage below ${coverageThresholdPercent}%'
    description: 'A live run collected fewer subscriptions than ${coverageThresholdPercent}% of the most a finished run saw in the last two days (subscriptions named by collection gaps count as missed): lost Reader rights, throttling, or a failing query. See the workbook, Run health tab.'
    severity: 2
    enabled: true
    scopes: [
      workspaceResourceId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: coverageDropQuery
          timeAggregation: 'Minimum'
          metricMeasureColumn: 'CoveragePercent'
          operator: 'LessThan'
          threshold: coverageThresholdPercent
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        securityTeam.id
      ]
      customProperties: {
        source: 'acr-pull-auditor'
      }
    }
  }
}

output securityActionGroupId string = securityTeam.id
output ownerActionGroupIds array = [for (o, i) in ownerActionGroups: ownerGroups[i].id]
