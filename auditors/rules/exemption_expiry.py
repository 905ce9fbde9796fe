"""AKS-ACR-013: exemptions are time-bound. One finding per entry of the exemptions file: Pass while it is in
force, Fail once it has expired (its findings then count again)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from auditors.exemptions import EXPIRING_SOON_DAYS, Exemption
from auditors.rules import Result, RuleMeta, Scope, Severity, Status, failed, passed, rule


@dataclass
class ExemptionContext:
    exemption: Exemption
    today: date
    matched: int  # findings it selected in this run


@rule(RuleMeta(
    id="AKS-ACR-013",
    title="Exemption has not expired",
    severity=Severity.MEDIUM,
    scope=Scope.EXEMPTION,
    category="Governance",
    seed_cause=None,
    statuses=frozenset({Status.PASS, Status.FAIL, Status.UNKNOWN}),  # Unknown: only from the engine's safeguard
    synopsis="Every exemption in the exemptions file is still in force; one that has expired no longer exempts "
             "anything and must be renewed (with a new approval) or removed.",
    remediation=(
        "# Renew with a new approval and expiry date, or remove the entry, in the exemptions file, then upload it:\n"
        "az storage blob upload --auth-mode login --account-name <auditor-storage-account> --container-name config "
        "--name exemptions.yaml --file exemptions.yaml --overwrite"
    ),
    links=("https://learn.microsoft.com/azure/governance/policy/concepts/exemption-structure",),
))
def exemption_in_force(ctx: ExemptionContext) -> Result:
    exemption = ctx.exemption
    evidence = {"exemptionId": exemption.id, "rules": list(exemption.rules), "approvedBy": exemption.approved_by,
                "expiresOn": exemption.expires_on.isoformat(), "ticket": exemption.ticket or None,
                "justification": exemption.justification, "matchedFindings": ctx.matched}
    if exemption.is_expired(ctx.today):
        return failed(f"Exemption {exemption.id} (approved by {exemption.approved_by}) expired on "
                      f"{exemption.expires_on.isoformat()}: the {ctx.matched} finding(s) it covered count again. "
                      "Renew it with a new approval or remove it.", **evidence)
    days = (exemption.expires_on - ctx.today).days
    soon = f"; it expires within {EXPIRING_SOON_DAYS} days" if days <= EXPIRING_SOON_DAYS else ""
    return passed(f"Exemption {exemption.id} is in force until {exemption.expires_on.isoformat()} ({days} day(s))"
                  f"{soon}; it covers {ctx.matched} finding(s).", **evidence)
