"""Validate a six-field NCRONTAB expression the way the Azure Functions timer trigger parses it.

The host resolves `%SETTING%` and then calls NCrontab's `CrontabSchedule.TryParse(value,
IncludingSeconds = true)` (azure-webjobs-sdk-extensions, `Timers/Scheduling/CronSchedule.cs`), so the value
must be exactly six fields separated by spaces: second minute hour day month day-of-week. What NCrontab
(`NCrontab/CrontabFieldImpl.cs`, `CrontabField.cs`) takes in a field, and what this module takes:

- `*`, a value, a range `a-b`, each optionally stepped (`*/n`, `a-b/n`, `a/n` meaning a to the field's
  maximum), and comma-separated lists of those;
- ranges: second and minute 0-59, hour 0-23, day 1-31, month 1-12, day-of-week 0-6 (Sunday is 0; 7 is out of
  range for NCrontab, unlike some crons);
- month and day names, case-insensitive, also in ranges, steps and lists. NCrontab takes any prefix of the
  full English name ("M" is March, "Ju" is June); this module wants at least three letters (Jan, Mon,
  Thursday), because shorter prefixes are ambiguous to a reader.

Deliberately stricter than NCrontab, where it silently reinterprets what was written: a range that runs
backwards (NCrontab swaps `22-2` into `2-22`), a step of 0 (NCrontab treats `*/0` as `*`), a signed step
(`*/+5`), and whitespace other than spaces between fields. Not supported by NCrontab, so refused too: `?`,
`L`, `W`, `#`, `H`, five-field expressions and the host's other form, a TimeSpan such as `00:05:00`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_NUMBER = re.compile(r"[0-9]+")
_NAME = re.compile(r"[A-Za-z]+")
_MIN_NAME_LETTERS = 3


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()


FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 6, _DAYS),
)
_LAYOUT = " ".join(f.name for f in FIELDS)


def problem(expression: str) -> str | None:
    """None when the Functions timer accepts `expression`; else one line naming the field and what is wrong."""
    if not isinstance(expression, str):
        return f"expected text, got {type(expression).__name__}"
    if re.search(r"[^\S ]", expression):
        return "separate the fields with spaces only (the timer does not split on tabs or line breaks)"
    parts = expression.split()
    if len(parts) != len(FIELDS):
        return f"expected {len(FIELDS)} fields ({_LAYOUT}), found {len(parts)}"
    for text, field in zip(parts, FIELDS, strict=True):
        reason = _field_problem(text, field)
        if reason:
            return f"{field.name} field {text!r}: {reason}"
    return None


def is_valid(expression: str) -> bool:
    return problem(expression) is None


def _field_problem(text: str, field: _Field) -> str | None:
    for item in text.split(","):
        if not item:
            return "empty list item"
        reason = _item_problem(item, field)
        if reason:
            return reason
    return None


def _item_problem(item: str, field: _Field) -> str | None:
    base, slash, step = item.partition("/")
    if slash:
        if not _NUMBER.fullmatch(step):
            return f"step {step!r} must be a whole number"
        if int(step) < 1:
            return "step must be at least 1"
    if base == "*":
        return None
    first, dash, last = base.partition("-")
    low, reason = _value(first, field)
    if reason or not dash:
        return reason
    high, reason = _value(last, field)
    if reason:
        return reason
    if low > high:
        return f"range {base} runs backwards; write {last}-{first} (NCrontab would silently read it that way)"
    return None


def _value(text: str, field: _Field) -> tuple[int, str | None]:
    if _NUMBER.fullmatch(text):
        number = int(text)
        if not field.low <= number <= field.high:
            return number, f"{number} is outside {field.low}-{field.high}"
        return number, None
    if not field.names:
        return 0, f"{text!r} is not a number {field.low}-{field.high}"
    if _NAME.fullmatch(text) and len(text) >= _MIN_NAME_LETTERS:
        for offset, name in enumerate(field.names):
            if name.lower().startswith(text.lower()):
                return field.low + offset, None
    short = ", ".join(n[:3] for n in field.names)
    return 0, f"{text!r} is not a number {field.low}-{field.high} or a {field.name} name ({short})"
