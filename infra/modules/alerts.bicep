// Action groups and log search alerts on the auditor's tables. Each query is a file under ../alerts/ so that
// tests/test_infra.py validates it with the Kusto language service against the real table schemas.
//
// Routed by owner: new High/Critical problems (Fail or Unknown; pull verdicts AKS-ACR-000 and other High rules) and
// new observed pull failures of the access classes (AKS-ACR-002). Each has one rule per owner in ownerActionGroups
// (Owner dimension included for that owner only, that owner's action group), plus one catch-all rule for every
// other owner, including findings without an owner tag (Owner "(none)"), to the security team. "New" is the
// findings' Change column, read from runs that finished (Succeeded or Incomplete), once both a finding and its
// run's row have arrived; exempted and carried-forward findings never alert. To the security team: lapsed
// exemptions, run health (failed run, interrupted run, no successful run, coverage drop), quarantined spool
// entries and breaks in the evidence hash chain.

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
var runInterruptedQuery = loadTextContent('../alerts/run-interrupted.kql')
var noSuccessfulRunQuery = loadTextContent('../alerts/no-successful-run.kql')
var coverageDropQuery = loadTextContent('../alerts/coverage-drop.kql')
var observedPullFailuresByOwnerQuery = loadTextContent('../alerts/observed-pull-failures-by-owner.kql')
var exemptionExpiredQuery = loadTextContent('../alerts/exemption-expired.kql')
var quarantinedSpoolQuery = loadTextContent('../alerts/quarantined-spool.kql')
var evidenceChainBrokenQuery = loadTextContent('../alerts/evidence-chain-broken.kql')
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
    description: 'Findings of owner ${o.owner} that fail, or become Unknown, at High or Critical severity for the first time (Change "New"), not exempted: cluster × registry pairs that cannot pull or cannot be shown to pull (AKS-ACR-000) and other High rules. Root cause and remediation are in the workbook "ACR pull audit" (Cluster × registry, Findings and Changes tabs).'
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
    description: 'New (Change "New"), not exempted High or Critical Fail or Unknown findings whose owner has no action group of its own, or that carry no owner tag (Owner "(none)").'
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

resource ownerObservedPullFailures 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for (o, i) in ownerActionGroups: {
  name: 'acr-pull-audit-observed-pull-failures-owner-${i}'
  location: location
  tags: union(tags, { owner: o.owner })
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: new observed pull failures of ${o.owner}'
    description: 'Clusters of owner ${o.owner} whose kubelets reported image pulls refused or unreachable (Unauthorized, Forbidden, NameResolution, Unreachable) in Container Insights, for the first time (AKS-ACR-002, Change "New"), not exempted. See the workbook "ACR pull audit", Observed pull failures tab.'
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
          query: observedPullFailuresByOwnerQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'NewObservedFailures'
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

resource unmappedObservedPullFailures 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'acr-pull-audit-observed-pull-failures-other-owners'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: new observed pull failures of other owners'
    description: 'New (Change "New"), not exempted AKS-ACR-002 failures of the access classes whose owner has no action group of its own, or that carry no owner tag (Owner "(none)").'
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
          query: observedPullFailuresByOwnerQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'NewObservedFailures'
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

resource exemptionExpired 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'acr-pull-audit-exemption-expired'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: exemption expired'
    description: 'An exemption in the exemptions file (config/exemptions.yaml) passed its expiresOn date (AKS-ACR-013, Change "New"); the findings it covered are no longer exempted. Remove or renew the entry (docs/permissions.md, updating exemptions).'
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
          query: exemptionExpiredQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'ExpiredExemptions'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'ExemptionId'
              operator: 'Include'
              values: [
                '*'
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
        securityTeam.id
      ]
      customProperties: {
        source: 'acr-pull-auditor'
      }
    }
  }
}

resource quarantinedSpool 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'acr-pull-audit-quarantined-spool'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: spool entries quarantined'
    description: 'A run moved spool entries that the Logs Ingestion API kept refusing out of the delivery loop (QuarantinedSpoolEntries); their rows are missing from the workspace. See the workbook, Run health tab, and the run\'s Errors.'
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
          query: quarantinedSpoolQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'QuarantinedEntries'
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

resource evidenceChainBroken 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'acr-pull-audit-evidence-chain-broken'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: evidence chain broken'
    description: 'A run\'s PreviousManifestSha256 is not the manifest hash of the run before it in the chain of its scope, two runs claim one chain position, or rows of one run carry different manifest hashes. Check the archive with `python -m auditors evidence verify`; see the workbook, Auditor tab.'
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
          query: evidenceChainBrokenQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'BrokenLinks'
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

resource runFailed 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'acr-pull-audit-run-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: run failed'
    description: 'An audit run ended with RunStatus Failed; its Errors column says why (workbook, Run health tab). Interrupted runs have an alert of their own.'
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

resource runInterrupted 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'acr-pull-audit-run-interrupted'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR pull audit: run interrupted'
    description: 'An audit run was killed, crashed or timed out before it wrote its run row (RunStatus Failed, Errors[0] "interrupted: ..."); a later run delivered the row it had written ahead. Its findings are partial and not current state. Check the function app\'s invocations and timeout (workbook, Run health tab).'
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
          query: runInterruptedQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'InterruptedRuns'
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
