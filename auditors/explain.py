"""`explain CLUSTER [REGISTRY]`: the chain of facts behind a pull verdict, for a person.

Built from finding records only (a fresh evaluation, or the findings file of an earlier run), so the text and
`--json` say the same thing and an explanation can be given long after the run, without Azure access.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from auditors.findings import FindingsFileError, findings_file, read_records
from auditors.rules import RULES

VERDICT_RULE = "AKS-ACR-000"
# The order a pull meets the checks: who pulls, is it allowed, can it get there, what the cluster saw, and
# how the registry itself is set up.
CATEGORY_ORDER = ("Identity", "Network", "DNS", "Region", "Observed", "Posture")
CATEGORY_TITLES = {"Identity": "Pull identity and permission", "Network": "Network path", "DNS": "Private DNS",
                   "Region": "Region", "Observed": "Observed pulls (Container Insights)",
                   "Posture": "Registry settings"}
NEEDS_ACTION = ("Fail", "Unknown")
MAX_LISTED = 6


class ExplainError(ValueError):
    """The cluster or registry asked about cannot be found, or is ambiguous; the message says what to give."""


def read_findings(path: str | Path) -> list[dict]:
    """Finding records of an earlier run: its findings.jsonl, or the out folder that holds it."""
    try:
        return list(read_records(findings_file(path)))
    except FindingsFileError as exc:
        raise ExplainError(str(exc)) from None


def _matches(text: str, *values: str) -> bool:
    wanted = text.strip().lower().rstrip("/")
    return any(value and value.lower().rstrip("/") == wanted for value in values)


def pick_cluster(wanted: str, candidates: Iterable[tuple[str, str]]) -> str:
    """The id of the one cluster `wanted` names (its name or id, any case), from (id, name) candidates."""
    known = dict(candidates)
    ids = sorted({cid for cid, name in known.items() if _matches(wanted, cid, name)}, key=str.lower)
    if len(ids) == 1:
        return ids[0]
    if ids:
        raise ExplainError(f"{len(ids)} clusters are named {wanted!r}; give the resource id: " + ", ".join(ids))
    names = sorted(set(known.values()))
    close = difflib.get_close_matches(wanted, names, n=5, cutoff=0.6) or \
        [name for name in names if wanted.lower() in name.lower()][:5]
    hint = f"; similar: {', '.join(close)}" if close else ""
    raise ExplainError(f"no cluster named {wanted!r} among {len(known):,} cluster(s){hint}")


def explanation(records: list[dict], cluster: str, registry: str | None = None) -> dict[str, Any]:
    """The explanation as data: the cluster, its own checks, and for each registry (or the one asked about) the
    verdict and every check in the order a pull meets them, with its evidence and fix."""
    cluster_id = pick_cluster(cluster, {(r["ClusterId"], r.get("ClusterName", "")) for r in records
                                        if r.get("ClusterId")})
    mine = [r for r in records if _matches(cluster_id, r.get("ClusterId", ""))]
    registry_ids = {r["RegistryId"] for r in mine if r.get("RegistryId")} | \
        {r.get("RegistryName", "") for r in mine if r.get("Scope") == "pair" and not r.get("RegistryId")}
    if registry is not None:
        chosen = {rid for rid in registry_ids if any(
            _matches(registry, r.get("RegistryId", ""), r.get("RegistryName", ""), r.get("RegistryLoginServer", ""))
            for r in mine if rid in (r.get("RegistryId"), r.get("RegistryName")))}
        if not chosen:
            names = sorted({r.get("RegistryName", "") for r in mine if r.get("RegistryName")})
            raise ExplainError(f"{mine[0].get('ClusterName', cluster)} has no pair with registry {registry!r} in "
                               f"these findings; its registries: {', '.join(names) or 'none'}")
        registry_ids = chosen
    own = [r for r in mine if r.get("Scope") == "cluster"]
    first = mine[0]
    return {
        "cluster": {"id": cluster_id, "name": first.get("ClusterName", ""), "owner": first.get("Owner", "")},
        "runId": first.get("RunId", ""),
        "pairs": [_pair(records, mine, own, rid) for rid in sorted(registry_ids, key=str.lower)],
    }


def _pair(records: list[dict], mine: list[dict], own: list[dict], registry_id: str) -> dict[str, Any]:
    pair = [r for r in mine if r.get("Scope") == "pair" and registry_id in (r.get("RegistryId"), r.get("RegistryName"))]
    posture = [r for r in records if r.get("Scope") == "registry" and r.get("RegistryId")
               and _matches(registry_id, r["RegistryId"])]
    verdict = next((r for r in pair if r["RuleId"] == VERDICT_RULE), None)
    checks = [r for r in own + pair + posture if r["RuleId"] != VERDICT_RULE]
    order = {category: index for index, category in enumerate(CATEGORY_ORDER)}
    checks.sort(key=lambda r: (order.get(r.get("Category", ""), len(order)), r.get("Scope") != "cluster",
                               r["RuleId"]))
    sample = pair[0] if pair else {}
    return {
        "registry": {"id": sample.get("RegistryId", ""), "name": sample.get("RegistryName", registry_id),
                     "loginServer": sample.get("RegistryLoginServer", ""), "pairSource": sample.get("PairSource", "")},
        "verdict": {"status": verdict["Status"], "rootCause": verdict.get("Evidence", {}).get("rootCause"),
                    "message": verdict["Message"]} if verdict else None,
        "chain": [_check(r) for r in checks],
        "fixes": _fixes(checks, verdict),
    }


def _fixes(checks: list[dict], verdict: dict | None) -> list[dict]:
    """What to do, blocking checks first in the order the pull meets them, then the rest."""
    blocking = [c["rule"] for c in (verdict or {}).get("Evidence", {}).get("checks", [])]
    todo = [r for r in checks if r["Status"] in NEEDS_ACTION and r.get("Remediation") and not r.get("Exempted")]
    todo.sort(key=lambda r: blocking.index(r["RuleId"]) if r["RuleId"] in blocking else len(blocking))
    return [{"rule": r["RuleId"], "status": r["Status"], "blocking": r["RuleId"] in blocking,
             "commands": r["Remediation"]} for r in todo]


def _check(record: dict) -> dict[str, Any]:
    check = {"category": record.get("Category", ""), "rule": record["RuleId"],
             "title": record.get("RuleTitle", "") or _title(record["RuleId"]), "scope": record.get("Scope", ""),
             "status": record["Status"], "message": record.get("Message", ""),
             "evidence": record.get("Evidence") or {}}
    if record.get("Exempted"):
        check["exemption"] = {"id": record.get("ExemptionId", ""), "expiresOn": record.get("ExemptionExpiresOn")}
    return check


def _title(rule_id: str) -> str:
    rule = RULES.get(rule_id)
    return rule.meta.title if rule else ""


def render(data: dict[str, Any]) -> str:
    cluster = data["cluster"]
    lines = [f"Cluster {cluster['name']}  {cluster['id']}" + (f"  (owner {cluster['owner']})" if cluster["owner"]
                                                                 else "")]
    if not data["pairs"]:
        lines.append("  no registry is paired with this cluster (no tag, pairs file entry, role assignment or observed "
                     "pull names one); ask about one: explain CLUSTER REGISTRY")
    for pair in data["pairs"]:
        lines += ["", *_render_pair(cluster, pair)]
    return "\n".join(lines)


def _render_pair(cluster: dict, pair: dict) -> list[str]:
    registry, verdict = pair["registry"], pair["verdict"]
    head = f"{cluster['name']} -> {registry['name']}"
    if verdict:
        meaning = {"Fail": "cannot pull", "Unknown": "undecided", "Pass": "can pull"}.get(verdict["status"], "")
        head += f": {verdict['status']} ({meaning})"
    lines = [head, "=" * min(len(head), 100)]
    if registry["loginServer"] or registry["pairSource"]:
        paired = "nothing pairs them (evaluated because you asked)" if registry["pairSource"] == "explain" else \
            f"paired by {registry['pairSource'] or '-'}"
        lines.append(f"registry {registry['loginServer'] or registry['name']}, {paired}")
    if verdict:
        lines.append(f"verdict: {verdict['message']}")
    category = None
    for check in pair["chain"]:
        if check["category"] != category:
            category = check["category"]
            lines += ["", CATEGORY_TITLES.get(category, category)]
        lines.append(f"  [{check['status']}] {check['rule']} {check['title']}")
        lines.append(f"      {check['message']}")
        lines += [f"      {fact}" for fact in facts(check["evidence"])]
        if "exemption" in check:
            exemption = check["exemption"]
            lines.append(f"      exempted by {exemption['id']} until {exemption['expiresOn']}")
    lines += ["", "Fix, blocking problems first in the order the pull meets them:" if pair["fixes"] else
              "Nothing to fix."]
    for number, fix in enumerate(pair["fixes"], start=1):
        lines.append(f"  {number}. {fix['rule']} ({fix['status']}{', blocks the pull' if fix['blocking'] else ''}):")
        lines += [f"     {line}" for line in fix["commands"].splitlines()]
    return lines


def _grant_scope(grant: dict[str, Any]) -> str:
    """A grant's scope: written out, or the start of its role assignment's id."""
    assignment = str(grant.get("assignmentId") or "")
    cut = assignment.lower().find("/providers/microsoft.authorization/roleassignments/")
    return str(grant.get("scope") or (assignment[:cut] if cut >= 0 else assignment))


def facts(evidence: dict[str, Any]) -> list[str]:
    """Evidence as short `key: value` lines; grants and deny assignments as `role at scope`."""
    lines = []
    for key, value in evidence.items():
        if value in (None, "", [], {}) or key in ("checks",):
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) and "role" in v for v in value):
            shown = [f"{v['role']} at the {v.get('scopeLevel') or ''} scope {_grant_scope(v)}"
                     + (f" (through group {v['group']})" if v.get("group") else "")
                     + (f" if {v['condition']}" if v.get("condition") else "") for v in value[:MAX_LISTED]]
        elif isinstance(value, list):
            shown = [v if isinstance(v, str) else json.dumps(v, default=str)[:200] for v in value[:MAX_LISTED]]
        elif isinstance(value, dict):
            shown = [json.dumps(value, default=str)[:300]]
        else:
            shown = [str(value)]
        more = f" (+{len(value) - MAX_LISTED} more)" if isinstance(value, list) and len(value) > MAX_LISTED else ""
        lines.append(f"{key}: " + "; ".join(s.strip() for s in shown) + more)
    return lines
