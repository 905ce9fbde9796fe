"""ISO 8601 durations as settings take them (`P1D`, `PT12H`, `P7D`)."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")


def parse_lookback(text: str) -> timedelta:
    """An ISO 8601 duration in weeks, days, hours, minutes and seconds (`P1D`, `PT12H`, `P7D`, `P1DT6H`)."""
    value = text.strip().upper() if isinstance(text, str) else ""
    match = _DURATION.fullmatch(value)
    if not match or value in ("P", "PT") or value.endswith("T"):
        months_or_years = re.search(r"\d[YM]", value.split("T")[0])
        hint = " (months and years have no fixed length: use days, e.g. P30D)" if months_or_years else ""
        raise ValueError(f"lookback {text!r} is not an ISO 8601 duration such as P1D, PT12H or P7D{hint}")
    weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    duration = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    if duration <= timedelta(0):
        raise ValueError(f"lookback {text!r} must be longer than zero")
    return duration


def format_lookback(duration: timedelta) -> str:
    """The ISO 8601 spelling `parse_lookback` reads back: P1D, PT12H, P1DT30M, PT90S -> PT1M30S."""
    days, rest = divmod(round(duration.total_seconds()), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time_part = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    text = "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "")
    return text if text != "P" else "PT0S"
