"""NCRONTAB validation as the Functions timer parses it, cross-checked against croniter where both agree."""

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from auditors.ncrontab import FIELDS, problem


def croniter_accepts(expression: str) -> bool:
    """croniter reads six fields with seconds LAST (its default); NCRONTAB puts seconds first."""
    fields = expression.split()
    return croniter.is_valid(" ".join(fields[1:] + fields[:1]))


VALID = [
    "0 0 */6 * * *",
    "0 */5 * * * *",
    "* * * * * *",
    "0 0 9 * * Mon,Wed,Fri",
    "0 0 9 1 Jan,Jul *",
    "0 30 9 * Jan Mon",
    "0 0 9 * * mon-fri",
    "0 0 9 * * MON-FRI/2",
    "0 0 9 * * Mon/2",
    "0 0 9 * Dec *",
    "0 0 9 * * Sun-Sat",
    "0 0 9 * * 0-6",
    "0 0 9-17 * * 1-5",
    "0 0 7,18 * * *",
    "10-40/15 * * * * *",
    "5/10 * * * * *",
    "0 0 9 1-31/2 * *",
    "01 00 09 * * 006",
    "0 0 0-23/25 * * *",
    "*/70 * * * * *",
    "  0 0 9 * * *  ",
    "0  0 9 * * *",
]

# NCRONTAB accepts these; croniter does not (it only knows three-letter names).
VALID_BEYOND_CRONITER = [
    "0 0 9 * * Monday",
    "0 0 9 * January *",
    "0 0 9 * Sept *",
    "0 0 9 * * Thur-Sat",
]

INVALID = [  # (expression, field the reason must name, words it must contain)
    ("0 */6 * * *", "", "found 5"),
    ("0 0 0 */6 * * *", "", "found 7"),
    ("", "", "found 0"),
    ("%AUDIT_SCHEDULE%", "", "found 1"),
    ("0 0 24 * * *", "hour", "24 is outside 0-23"),
    ("60 0 9 * * *", "second", "60 is outside 0-59"),
    ("0 60 9 * * *", "minute", "60 is outside 0-59"),
    ("0 0 9 0 * *", "day", "0 is outside 1-31"),
    ("0 0 9 32 * *", "day", "32 is outside 1-31"),
    ("0 0 9 * 0 *", "month", "0 is outside 1-12"),
    ("0 0 9 * 13 *", "month", "13 is outside 1-12"),
    ("0 0 9 * * 7", "day-of-week", "7 is outside 0-6"),
    ("0 0 9 * * Foo", "day-of-week", "'Foo'"),
    ("0 0 9 * * mon,bad,wed", "day-of-week", "'bad'"),
    ("0 0 9 * Foo *", "month", "'Foo'"),
    ("0 0 Mon * * *", "hour", "not a number 0-23"),
    ("0 0 9 * * Mondays", "day-of-week", "'Mondays'"),
    ("0 0 9 * * Mo", "day-of-week", "'Mo'"),
    ("0 0 9 * Ju *", "month", "'Ju'"),
    ("0 0 9 * * 5-1", "day-of-week", "runs backwards"),
    ("0 0 22-2 * * *", "hour", "write 2-22"),
    ("0 0 */0 * * *", "hour", "at least 1"),
    ("0 0 9 * * 1/0", "day-of-week", "at least 1"),
    ("0 0 */+5 * * *", "hour", "whole number"),
    ("0 0 1-2/ * * *", "hour", "whole number"),
    ("0 0 /2 * * *", "hour", "not a number"),
    ("0 0 */2/3 * * *", "hour", "whole number"),
    ("0 0 9 * * ,1", "day-of-week", "empty list item"),
    ("0 0 9 * * 1,", "day-of-week", "empty list item"),
    ("0 0 9 * * 1--2", "day-of-week", "'-2'"),
    ("0 0 9 * * 1-3-5", "day-of-week", "'3-5'"),
    ("0 0 9 * * -1", "day-of-week", "''"),
    ("0 0 9 * * +1", "day-of-week", "'+1'"),
    ("0 0 9 * * 1#2", "day-of-week", "'1#2'"),
    ("0 0 9 0-0 * *", "day", "0 is outside 1-31"),
    ("0 0 9 L * *", "day", "'L'"),
    ("0 0 9 ? * *", "day", "'?'"),
    ("0 0 9 H * *", "day", "'H'"),
    ("0 0 9 \u0661 * *", "day", "not a number"),  # Arabic-Indic one: NCrontab's int.Parse takes ASCII digits only
    ("0 70/10 * * * *", "minute", "70 is outside 0-59"),
    ("0\t0 9 * * *", "", "spaces only"),
    ("0 0 9 * *\n*", "", "spaces only"),
]


@pytest.mark.parametrize("expression", VALID + VALID_BEYOND_CRONITER)
def test_valid(expression):
    assert problem(expression) is None


@pytest.mark.parametrize(("expression", "field", "words"), INVALID)
def test_invalid_names_the_field_and_the_reason(expression, field, words):
    reason = problem(expression)
    assert reason is not None
    assert "\n" not in reason
    if field:
        assert reason.startswith(f"{field} field ")
    assert words in reason


def test_the_default_schedule_is_valid():
    from auditors.settings import Settings

    assert problem(Settings().schedule) is None


@pytest.mark.parametrize("expression", VALID)
def test_croniter_accepts_every_shared_valid_expression(expression):
    assert croniter_accepts(expression)


DIVERGENCES = [  # croniter accepts, NCRONTAB (and this module) refuse
    ("0 0 9 * * 7", "croniter reads 7 as Sunday; NCrontab's day-of-week is 0-6"),
    ("0 0 9 * * 5-1", "croniter wraps the week; NCrontab swaps the bounds, so this module refuses it"),
    ("0 0 22-2 * * *", "croniter wraps past midnight; NCrontab would run 2-22"),
    ("0 0 9 * * 1#2", "nth weekday is a croniter/Quartz extension"),
    ("0 0 9 L * *", "last day of month is a croniter/Quartz extension"),
    ("0 0 9 ? * *", "? is a Quartz placeholder"),
    ("0 0 9 0-0 * *", "croniter lets the range 0-0 through where day and month start at 1"),
]

# Invalid for both: every INVALID case with a field, minus the divergences (field-count cases are left out
# because croniter also takes five or seven fields).
SHARED_INVALID = [e for e, field, _ in INVALID if field and e not in {d for d, _ in DIVERGENCES}]


@pytest.mark.parametrize("expression", SHARED_INVALID)
def test_croniter_rejects_every_shared_invalid_expression(expression):
    assert not croniter_accepts(expression)


@pytest.mark.parametrize(("expression", "why"), DIVERGENCES)
def test_known_divergences_from_croniter(expression, why):
    assert croniter_accepts(expression), f"croniter changed; revisit: {why}"
    assert problem(expression) is not None


def _item(field):
    """One list item from the syntax croniter and NCRONTAB share: numbers (some out of range), ascending ranges,
    steps >= 1 and three-letter names."""
    numbers = st.integers(min_value=0, max_value=field.high + 3).filter(
        lambda n: not (field.name == "day-of-week" and n == 7))
    values = numbers.map(str)
    if field.names:
        names = st.sampled_from([name[:3] for name in field.names])
        values = values | st.tuples(names, st.sampled_from([str.upper, str.lower, str.title])).map(
            lambda t: t[1](t[0]))
    ascending = st.tuples(numbers, numbers).map(sorted).map(lambda pair: f"{pair[0]}-{pair[1]}").filter(
        lambda text: not (text == "0-0" and field.low == 1))  # a croniter quirk, listed in DIVERGENCES
    base = st.just("*") | values | ascending
    step = st.none() | st.integers(min_value=1, max_value=field.high + 5)
    return st.tuples(base, step).map(lambda t: t[0] if t[1] is None else f"{t[0]}/{t[1]}")


_EXPRESSIONS = st.tuples(*(st.lists(_item(f), min_size=1, max_size=3).map(",".join) for f in FIELDS)).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(_EXPRESSIONS)
def test_agrees_with_croniter_on_the_shared_syntax(expression):
    assert (problem(expression) is None) == croniter_accepts(expression), problem(expression)
