"""Property tests (hypothesis): randomly damaged demo rows never break evaluation and never turn a row the model
could not read into a Fail; random pairs files either load or fail with one short line.

Bounded to run in well under a minute; derandomized (the same examples every run) and without an example
database, so a run is reproducible and leaves nothing behind.
"""

from __future__ import annotations

import atexit
import copy
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

from auditors.arm import is_guid
from auditors.model import NEVER_PULLING_PRINCIPALS, Inventory
from auditors.pairing import PairsConfig, PairsFileError, load_pairs_file
from auditors.sources.snapshot import ID_LESS_TYPES, normalise_row
from tests.helpers import demo_config, demo_rows, evaluate

STATUSES = {"Pass", "Fail", "Unknown", "NotApplicable"}
T_ROLE_ASSIGNMENT = "microsoft.authorization/roleassignments"
FUZZ = settings(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])

BASE = demo_rows()
CONFIG = demo_config()
ASSIGNMENTS = [i for i, r in enumerate(BASE) if r["type"] == T_ROLE_ASSIGNMENT]


def kept_by_the_loader(row) -> bool:
    """Whether a live run keeps this row (auditors.inputs.collect_live: rows of the id-less tables as they are, any
    other row once its normalised `id` and `type` are non-empty). The snapshot reader is stricter (a string id),
    so what passes here is the most a source can hand the model."""
    if not isinstance(row, dict):
        return False
    declared = row.get("type")
    if isinstance(declared, str) and declared.lower().startswith(ID_LESS_TYPES):
        return True
    normalised = normalise_row(row)
    return bool(normalised.get("id")) and bool(normalised["type"])


def findings_of(rows: list) -> list:
    return evaluate([r for r in rows if kept_by_the_loader(r)], CONFIG)


def by_id(findings, rule_id: str | None = None) -> dict[str, str]:
    return {f.FindingId: f.Status for f in findings if rule_id is None or f.RuleId == rule_id}


def check_sane(findings) -> None:
    assert findings, "no findings at all"
    for finding in findings:
        assert finding.Status in STATUSES, finding
        assert "Internal error" not in finding.Message, finding.Message
        assert finding.FindingId and finding.RuleId.startswith("AKS-ACR-")


# -- random damage to demo rows ------------------------------------------------------------------------------------

HUGE = 10**40
leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([HUGE, -HUGE, 2**63, 2**64 + 1]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(["", " ", "/", "*"]),
)
hostile = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=3), max_leaves=8)


def paths(value, prefix=()) -> list[tuple]:
    """Every key path inside a row (to a dict key or a list index)."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((*prefix, key))
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((*prefix, index))
            found += paths(item, (*prefix, index))
    return found


# (kind, which row, which path, replacement)
damage = st.tuples(st.sampled_from(["drop", "replace", "replace", "replace", "upper", "lower", "slash", "duplicate",
                                    "whole-row"]),
                   st.integers(0, 10**6), st.integers(0, 10**6), hostile)


def apply(rows: list, operations, spare: set[int] = frozenset()) -> list:
    """Damage rows in place: drop a key, replace a value (at any depth; shallow paths as often as deep ones),
    change the case of an id or add a trailing slash, duplicate a row, or replace a whole row. Rows whose index is
    in `spare` are left alone."""
    for kind, which, where, value in operations:
        index = which % len(rows)
        if index in spare:
            continue
        row = rows[index]
        if kind == "duplicate":
            rows.append(copy.deepcopy(row))
            continue
        if kind == "whole-row":
            rows[index] = value
            continue
        if not isinstance(row, dict):
            continue
        if kind in ("upper", "lower", "slash"):
            if isinstance(row.get("id"), str):
                row["id"] = {"upper": str.upper, "lower": str.lower, "slash": lambda t: t + "/"}[kind](row["id"])
            continue
        candidates = paths(row)
        shallow = [p for p in candidates if len(p) <= 2]
        pool = shallow if where % 2 and shallow else candidates
        if not pool:
            continue
        path = pool[where % len(pool)]
        parent = row
        for key in path[:-1]:
            parent = parent[key]
        if kind == "drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return rows


@settings(FUZZ, max_examples=250)
@given(st.lists(damage, min_size=1, max_size=25))
def test_damaged_rows_never_break_evaluation(operations):
    rows = apply(copy.deepcopy(BASE), operations)
    check_sane(findings_of(rows))


# -- an unreadable role assignment is a gap, never a missing grant -------------------------------------------------

# (what to damage, its new value): `properties` not an object (or empty), or no usable principal or role id
corruption = st.one_of(
    st.tuples(st.just("properties"), st.one_of(st.none(), st.just({}), st.text(max_size=8), st.integers(),
                                                st.lists(st.integers(), max_size=2), st.sampled_from([HUGE, -1.5]))),
    st.tuples(st.just("principalId"), st.one_of(st.none(), st.just(""), st.integers(), st.just([]), st.just({}))),
    st.tuples(st.just("roleDefinitionId"),
              st.one_of(st.none(), st.just(""), st.integers(), st.just([]), st.just({}), st.text(max_size=30))),
)


def corrupt(row: dict, how) -> dict:
    part, value = how
    row = copy.deepcopy(row)
    if part == "properties":
        row["properties"] = value
    else:
        row["properties"][part] = value
    return row


@settings(FUZZ, max_examples=120)
@given(st.sampled_from(ASSIGNMENTS), corruption, st.lists(damage, max_size=6))
@example(ASSIGNMENTS[0], ("properties", None), [])
def test_a_role_assignment_the_model_cannot_read_never_yields_a_fail(target, how, operations):
    """Compare three estates that differ only in one role-assignment row: intact, removed, and unreadable (its
    `properties` not an object, or no usable principalId / roleDefinitionId). A removed row may leave a pair
    without a grant (Fail); an unreadable one must not: the model cannot tell it is not that grant. So:
    - every AKS-ACR-001 verdict the row decides (intact differs from removed) is Unknown when it is unreadable;
    - an unreadable row adds no Fail anywhere that the removed-row estate does not have."""
    damaged = apply(copy.deepcopy(BASE), operations, spare={target})
    original = BASE[target]
    intact = damaged
    removed = [r for i, r in enumerate(damaged) if i != target]
    unreadable = [corrupt(original, how) if i == target else r for i, r in enumerate(damaged)]
    intact_001 = by_id(findings_of(intact), "AKS-ACR-001")
    removed_all, unreadable_findings = by_id(findings_of(removed)), findings_of(unreadable)
    check_sane(unreadable_findings)
    unreadable_all = by_id(unreadable_findings)
    decided_by_row = [k for k, status in intact_001.items() if removed_all.get(k) != status]
    note(f"row {original['id']}: decides {len(decided_by_row)} AKS-ACR-001 verdict(s)")
    event("the row decides a Fail" if any(removed_all.get(k) == "Fail" for k in decided_by_row) else
          "the row decides no Fail")
    for key in decided_by_row:
        if removed_all.get(key) == "Fail":
            assert unreadable_all.get(key) == "Unknown", (key, intact_001[key], unreadable_all.get(key))
    fails = {k for k, status in unreadable_all.items() if status == "Fail"}
    assert not fails - {k for k, status in removed_all.items() if status == "Fail"}
    inventory = Inventory.from_rows(normalise_row(r) for r in unreadable if kept_by_the_loader(r))
    never_pulls = str(original["properties"].get("principalType")).lower() in NEVER_PULLING_PRINCIPALS
    if how[0] == "properties" or not never_pulls:  # a user's assignment is left out before its ids are read
        assert inventory.unreadable_rows >= 1


def test_the_unreadable_row_property_is_not_vacuous():
    """At least one demo role assignment decides a pair's verdict (Pass with it, Fail without), so the property
    above has something to hold."""
    deciding = 0
    intact = by_id(findings_of(BASE), "AKS-ACR-001")
    for target in ASSIGNMENTS:
        removed = by_id(findings_of([r for i, r in enumerate(BASE) if i != target]), "AKS-ACR-001")
        deciding += sum(1 for k, s in intact.items() if s == "Pass" and removed.get(k) == "Fail")
    assert deciding >= 3


# -- metamorphic: what must not change the verdicts -----------------------------------------------------------------

WANT = {f.FindingId: (f.Status, f.Message) for f in findings_of(BASE)}


@settings(FUZZ, max_examples=40)
@given(st.permutations(range(len(BASE))))
def test_row_order_changes_nothing(order):
    got = {f.FindingId: (f.Status, f.Message) for f in findings_of([copy.deepcopy(BASE[i]) for i in order])}
    assert got == WANT


@settings(FUZZ, max_examples=40)
@given(st.sets(st.integers(0, len(BASE) - 1), min_size=1), st.sampled_from([str.upper, str.lower, str.swapcase]))
def test_case_of_ids_changes_no_verdict(chosen, change):
    def recase(value):
        if isinstance(value, dict):
            return {k: recase(v) for k, v in value.items()}
        if isinstance(value, list):
            return [recase(v) for v in value]
        return change(value) if isinstance(value, str) and value.startswith("/") else value

    rows = [recase(r) if i in chosen else copy.deepcopy(r) for i, r in enumerate(BASE)]
    assert by_id(findings_of(rows)) == {k: status for k, (status, _) in WANT.items()}


@settings(FUZZ, max_examples=40)
@given(st.lists(st.integers(0, len(BASE) - 1), min_size=1, max_size=10))
def test_identical_duplicate_rows_change_no_verdict(chosen):
    rows = copy.deepcopy(BASE) + [copy.deepcopy(BASE[i]) for i in chosen]
    assert by_id(findings_of(rows)) == {k: status for k, (status, _) in WANT.items()}


# -- random pairs files ----------------------------------------------------------------------------------------------


class Raw(str):
    """YAML text written as is (a token no Python value renders to, e.g. an integer of 5,000 digits)."""


GUIDS = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
# Keys at the levels the loader names in its messages are strings without line breaks here; what breaks those
# messages is checked by the cases below.
NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))
name_text = st.text(NAME_CHARS, max_size=12)
WORDS = ["pairs", "principals", "groups", "clusters", "registries", "description", "id", "name", "tag",
         "subscription", "aks-*", "env=prod", "acrcontososhared", "/subscriptions/*", "[", "*?[!]"]
scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    name_text, st.sampled_from(WORDS), GUIDS, st.dates(),
    st.sampled_from([Raw("9" * 5000), Raw('"\\ud800"'), Raw("0x1F"), Raw("0o17"), Raw("1_000"), Raw(".nan"),
                     Raw("2027-02-30"), Raw("~"), Raw("!!binary aGVsbG8="), Raw("!!python/object:os.system {}"),
                     Raw("'it''s'"), Raw('"tab\\tnew\\nline"'), Raw("yes"), Raw("off")]),
)
any_value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(st.one_of(name_text, st.sampled_from(WORDS)), inner, max_size=3),
                         max_leaves=10)
globs = st.one_of(st.sampled_from(WORDS), name_text, st.lists(st.sampled_from(WORDS) | name_text, max_size=3),
                  any_value)


@st.composite
def pairs_documents(draw):
    """A document shaped like a pairs file at random depth: valid parts, wrong types and unknown keys mixed."""
    # Hypothesis starts from the simplest draws (0, empty): the rare branches are the non-zero ones.
    def maybe(strategy):
        return draw(any_value) if draw(st.integers(0, 4)) == 4 else draw(strategy)

    def keys_of(known: list[str], values: dict) -> dict:
        left_out = draw(st.lists(st.sampled_from(known), unique=True, max_size=len(known) - 1))
        document = {key: values[key]() for key in known if key not in left_out}
        for extra in draw(st.lists(name_text, max_size=2)):
            document.setdefault(extra, draw(any_value))
        return document

    def clusters():
        return maybe(st.just(keys_of(["id", "name", "tag", "subscription"],
                                     {k: (lambda: draw(globs)) for k in ("id", "name", "tag", "subscription")})))

    def entry():
        return maybe(st.just(keys_of(["clusters", "registries", "description"], {
            "clusters": clusters, "registries": lambda: draw(globs), "description": lambda: draw(any_value)})))

    def principals():
        return maybe(st.dictionaries(GUIDS | name_text | st.integers(), GUIDS | any_value, max_size=3))

    def groups():
        return maybe(st.dictionaries(GUIDS | name_text | st.integers(),
                                     st.lists(GUIDS | scalar, max_size=3) | any_value, max_size=3))

    top = keys_of(["pairs", "principals", "groups"], {
        "pairs": lambda: maybe(st.just([entry() for _ in range(draw(st.integers(0, 3)))])), "principals": principals,
        "groups": groups})
    if draw(st.integers(0, 5)) == 5:
        top.update(draw(st.dictionaries(st.integers() | st.booleans() | st.none() | st.dates(), any_value, max_size=2)))
    return draw(any_value) if draw(st.integers(0, 8)) == 8 else top


def yaml_scalar(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        return str(value)  # a date: YAML's own timestamp form
    return json.dumps(value, ensure_ascii=False)  # a double-quoted YAML scalar


class YamlWriter:
    """Block or flow YAML for a value, with anchors and aliases sprinkled in when asked."""

    def __init__(self, draw) -> None:
        self.draw, self.anchors = draw, []

    def anchor(self) -> str:
        if self.draw(st.integers(0, 9)) == 9:
            name = f"a{len(self.anchors)}"
            self.anchors.append(name)
            return f"&{name} "
        return ""

    def flow(self, value) -> str:
        if self.anchors and self.draw(st.integers(0, 4)) == 4:
            return f"*{self.draw(st.sampled_from(self.anchors))}"
        if isinstance(value, dict):
            return self.anchor() + "{" + ", ".join(f"{yaml_scalar(k)}: {self.flow(v)}" for k, v in value.items()) + "}"
        if isinstance(value, list):
            return self.anchor() + "[" + ", ".join(self.flow(v) for v in value) + "]"
        return yaml_scalar(value)

    def block(self, value, indent: int = 0) -> str:
        pad = " " * indent
        if not value or not isinstance(value, dict | list) or self.draw(st.integers(0, 3)) == 3:
            return pad + self.flow(value) + "\n"
        lines = []
        for key, item in (value.items() if isinstance(value, dict) else ((None, v) for v in value)):
            head = f"{pad}{yaml_scalar(key)}:" if key is not None or isinstance(value, dict) else f"{pad}-"
            if isinstance(item, dict | list) and item:
                lines.append(f"{head} {self.anchor()}".rstrip() + "\n" + self.block(item, indent + 2))
            else:
                lines.append(f"{head} {self.flow(item)}\n")
        return "".join(lines)


@st.composite
def pairs_files(draw) -> tuple[str, str]:
    """(suffix, text): YAML written out with random styles, the same document as JSON, or raw text."""
    kind = draw(st.sampled_from(["yaml", "json", "yaml", "yaml", "text"]))
    if kind == "text":
        return ".yaml", draw(st.text(max_size=200))
    document = draw(pairs_documents())
    if kind == "json":
        try:
            return ".json", json.dumps(document, default=str, ensure_ascii=draw(st.booleans()))
        except (TypeError, ValueError):  # keys JSON cannot hold: write YAML instead
            pass
    return ".yaml", YamlWriter(draw).block(document)


_FOLDER = Path(tempfile.mkdtemp(prefix="fuzz-pairs-"))
atexit.register(shutil.rmtree, _FOLDER, True)


def load_text(suffix: str, text: str):
    path = _FOLDER / f"pairs{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return path, load_pairs_file(path)


def check_loaded(config: PairsConfig) -> None:
    """A loaded file holds what the evaluator relies on."""
    assert isinstance(config, PairsConfig)
    for selector in config.selectors:
        assert selector.registries and all(isinstance(r, str) and r for r in selector.registries)
        for globs_ in (selector.ids, selector.names, selector.subscriptions):
            assert all(isinstance(g, str) for g in globs_)
        for cluster in CLUSTERS:
            assert selector.matches(cluster) in (True, False)
    assert all(is_guid(k) and is_guid(v) and k == k.lower() and v == v.lower() for k, v in config.principals.items())
    assert all(is_guid(g) and all(is_guid(m) for m in members) for g, members in config.groups.items())


CLUSTERS = list(Inventory.from_rows(normalise_row(r) for r in BASE).clusters.values())


def check_message(path: Path, exc: PairsFileError) -> None:
    message = str(exc)
    assert len(message.splitlines()) == 1, message
    assert len(message) < 500, message
    assert str(path) in message


@settings(FUZZ, max_examples=400)
@given(pairs_files())
@example((".yaml", "pairs:\n  - clusters: &c {name: a}\n    registries: [r]\n  - clusters: *c\n    registries: [r]\n"))
@example((".yaml", "a: &a [*a]\n"))
@example((".yaml", "pairs: " + "[" * 200 + "]" * 200 + "\n"))
@example((".json", '{"pairs": [], "pairs": []}'))
@example((".yaml", "pairs:\n  - clusters: {name: aks-*}\n    registries: " + "9" * 5000 + "\n"))
def test_random_pairs_files_load_or_fail_in_one_short_line(case):
    """Either a usable PairsConfig, or PairsFileError with one line under 500 characters naming the file. Only
    PairsFileError is acceptable: the scan treats it as unusable input (exit 2); anything else, even the
    DocumentError of auditors.safe_yaml, would be a failed run (exit 4)."""
    suffix, text = case
    note(text[:2000])
    path = _FOLDER / f"pairs{suffix}"
    try:
        _, config = load_text(suffix, text)
    except PairsFileError as exc:
        check_message(path, exc)
    else:
        check_loaded(config)


def test_the_pairs_generator_reaches_both_outcomes():
    """The documents above are not all rejected at the first check: some load, some fail deep inside entries."""
    outcomes = {"loaded": 0, "entry": 0}

    @settings(FUZZ, max_examples=100)
    @given(pairs_files())
    def tally(case):
        try:
            load_text(*case)
            outcomes["loaded"] += 1
        except PairsFileError as exc:
            outcomes["entry"] += "pairs[" in str(exc)
        except Exception:  # counted by the test above, not here
            pass

    tally()
    assert outcomes["loaded"] >= 5 and outcomes["entry"] >= 5, outcomes


@pytest.mark.parametrize("text", [
    pytest.param('pairs:\n  - {"a\\nb": x, clusters: {name: a}, registries: [r]}\n', id="linebreak-entry-key"),
    pytest.param('pairs:\n  - {clusters: {"a\\rb": a}, registries: [r]}\n', id="linebreak-clusters-key"),
    pytest.param('"a\\nb": 1\npairs: []\n', id="linebreak-top-level-key"),
    pytest.param("pairs:\n  - {1: x, clusters: {name: a}, registries: [r]}\n", id="int"),
    pytest.param("pairs:\n  - {1: x, b: y, clusters: {name: a}, registries: [r]}\n", id="int-and-string"),
    pytest.param("pairs:\n  - {null: x, clusters: {name: a}, registries: [r]}\n", id="null"),
    pytest.param("pairs:\n  - {clusters: {true: a}, registries: [r]}\n", id="bool-in-clusters"),
    pytest.param("pairs:\n  - {clusters: {2024-01-01: a}, registries: [r]}\n", id="date-in-clusters"),
    pytest.param('principals:\n  x: "' + "y" * 2000 + '"\n', id="long-principal-value"),
    pytest.param('groups:\n  ? "' + "g" * 2000 + '"\n  : []\n', id="long-group-members"),
    pytest.param("pairs:\n  - {" + ", ".join(f"k{i:03d}{'q' * 30}: 1" for i in range(60))
                 + ", clusters: {name: a}, registries: [r]}\n", id="many-unknown-keys"),
])
def test_an_odd_pairs_file_is_a_pairs_file_error_of_one_short_line(text):
    """Keys with line breaks, keys that are not strings, long values: a PairsFileError, one short line."""
    path = _FOLDER / "odd.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PairsFileError) as raised:
        load_pairs_file(path)
    check_message(path, raised.value)
