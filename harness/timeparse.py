"""Times on the command line: ISO 8601, or an age such as `30m`, `2h`, `7d`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from harness.errors import UsageError

_AGE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """A timezone-aware UTC datetime for `text`; naive ISO times are taken as UTC."""
    match = _AGE.match(text.strip())
    if match:
        amount, unit = match.groups()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{text!r} is not a time; use ISO 8601 (2026-11-28T10:00:00Z) or an age such as 30m, 2h, 7d."
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
