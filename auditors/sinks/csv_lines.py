"""findings.csv lines, byte for byte as `csv.writer` writes them (minimal quoting, CRLF), with `csv_cell`'s
formula guard, at a fraction of its cost.

A run repeats most of a row: a rule's columns in every finding of that rule, a cluster's and a registry's in
every finding about them, the run's own in all. Those groups of cells are rendered once and reused; only the
finding's own cells (its id, message, remediation and evidence) are rendered each time.
"""

from __future__ import annotations

from operator import attrgetter

from auditors.findings import FINDING_FIELDS, EncodedFinding, csv_cell

# Consecutive columns rendered together; the columns in none of them are the finding's own.
_GROUPS = {
    "TimeGenerated": ("TimeGenerated", "RunId"),
    "RuleId": ("RuleId", "RuleTitle", "Severity", "Category", "Status", "Scope"),
    "ClusterId": ("ClusterId", "ClusterName", "RegistryId", "RegistryName", "RegistryLoginServer", "ResourceId",
                  "SubscriptionId", "ResourceGroup", "PrincipalId", "Owner", "RegistryOwner", "PairSource"),
    "Exempted": ("Exempted", "ExemptionId", "ExemptionExpiresOn", "FirstSeen", "Change", "LastKnownStatus",
                 "LastSeen"),
}
_MAX_REMEMBERED = 4096  # rendered groups kept per group: findings arrive cluster by cluster


def quoted(text: str) -> str:
    """One CSV field as csv.writer's QUOTE_MINIMAL writes it."""
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if "," in text or "\n" in text or "\r" in text:
        return '"' + text + '"'
    return text


def header() -> str:
    return ",".join(quoted(name) for name in FINDING_FIELDS) + "\r\n"


def _plan() -> list[tuple[str, object]]:
    """The row as steps: ("group", getter of the group's values) or ("cell", getter of one column)."""
    steps, position, columns = [], 0, FINDING_FIELDS[:-1]
    while position < len(columns):
        name = columns[position]
        group = _GROUPS.get(name)
        if group:
            if columns[position:position + len(group)] != group:
                raise ValueError(f"CSV group {group} is not a run of consecutive columns")
            steps.append(("group", attrgetter(*group)))
            position += len(group)
        else:
            steps.append(("cell", attrgetter(name)))
            position += 1
    return steps


class CsvLines:
    def __init__(self) -> None:
        self._steps = _plan()
        self._rendered: list[dict[tuple, str]] = [{} for _ in self._steps]

    def line(self, encoded: EncodedFinding) -> str:
        finding = encoded.finding
        cells = []
        for (kind, values_of), rendered in zip(self._steps, self._rendered, strict=True):
            values = values_of(finding)
            if kind == "cell":
                if values.__class__ is list:  # Controls: one rendering per rule
                    key = tuple(values)
                    text = rendered.get(key)
                    if text is None:
                        text = rendered[key] = quoted(csv_cell(values))
                    cells.append(text)
                else:
                    cells.append(quoted(csv_cell(values)))
                continue
            text = rendered.get(values)  # a group's values are strings, booleans or None: hashable as they are
            if text is None:
                if len(rendered) >= _MAX_REMEMBERED:
                    rendered.clear()
                text = rendered[values] = ",".join([quoted(csv_cell(value)) for value in values])
            cells.append(text)
        cells.append(quoted(encoded.evidence.decode()))
        return ",".join(cells) + "\r\n"
