"""Schedules: when a job fires. Pure functions of (schedule, time zone, instant); no I/O.

Three kinds, exactly one per job:
- `cron`: a 5-field expression or an `@hourly`-style alias, evaluated by cronsim in the
  job's IANA time zone. cronsim follows Debian cron across DST: a time that does not exist
  on a spring-forward day fires once at the next valid time (02:30 -> 03:00), and a time that
  occurs twice on a fall-back day fires once (the first occurrence).
- `every`: a fixed interval (`"15m"`, `"1h30m"`, `"90s"`, `"2d"`) counted in absolute time
  from an anchor (the job's creation), so it neither drifts nor cares about DST.
- `at`: one instant (ISO-8601; without an offset it is read in the job's time zone).

Every instant here is an aware datetime; the stores keep UTC epoch seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from sidecar.errors import InvalidValue

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EVERY = re.compile(r"(?:(\d+)([smhdw]))+?")
_EVERY_WHOLE = re.compile(r"(?:\d+[smhdw])+")
MIN_EVERY_SECONDS = 1
MAX_EVERY_SECONDS = 366 * 86400
#: a cron expression must fire at least once within this many iterations of cronsim (it
#: rejects impossible dates like Feb 30 itself; this is a guard against pathological ones)
_SCAN_LIMIT = 100_000


@lru_cache(maxsize=512)
def zone(name: str, path: str = "$.params.timezone") -> ZoneInfo:
    """The IANA zone `name`; InvalidValue naming the field when there is no such zone."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise InvalidValue(f"{name!r} is not an IANA time zone (like Europe/Berlin or UTC)", path)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidValue(f"{name!r} is not an IANA time zone (like Europe/Berlin or UTC)", path) from None


def parse_every(text: str, path: str = "$.params.schedule.every") -> int:
    """`"1h30m"` -> 5400 seconds."""
    compact = text.replace(" ", "").lower()
    if not _EVERY_WHOLE.fullmatch(compact):
        raise InvalidValue(f"{text!r} is not an interval: use a number and a unit, like 90s, 15m, 1h30m or 2d", path)
    seconds = sum(int(n) * _UNITS[u] for n, u in _EVERY.findall(compact))
    if not MIN_EVERY_SECONDS <= seconds <= MAX_EVERY_SECONDS:
        raise InvalidValue(f"an interval is between {MIN_EVERY_SECONDS}s and {MAX_EVERY_SECONDS // 86400}d", path)
    return seconds


def parse_instant(text: str, tz: ZoneInfo, path: str = "$.params.schedule.at") -> datetime:
    """An ISO-8601 instant; without an offset it is a wall time in `tz`."""
    try:
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidValue(f"{text!r} is not an ISO-8601 date and time (like 2026-03-08T09:30:00Z)", path) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value


def normalize_cron(expr: str) -> str:
    text = " ".join(expr.split())
    return ALIASES.get(text.lower(), text)


def check_cron(expr: str, path: str = "$.params.schedule.cron") -> str:
    """The expression (aliases expanded); InvalidValue naming the field and what is wrong."""
    text = normalize_cron(expr)
    if text.startswith("@"):
        raise InvalidValue(f"{expr!r}: unknown alias; known: {', '.join(sorted(ALIASES))}", path)
    if len(text.split()) != 5:
        raise InvalidValue(f"{expr!r}: a cron expression has 5 fields (minute hour day-of-month month "
                           "day-of-week), or is an alias like @hourly", path)
    try:
        it = CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
        next(it)
    except CronSimError as exc:
        raise InvalidValue(f"{expr!r}: {exc}", path) from None
    except (StopIteration, ValueError, OverflowError):
        raise InvalidValue(f"{expr!r} never fires", path) from None
    return text


_LOOKBACK = timedelta(hours=3)


def _offset(value: datetime, tz: ZoneInfo) -> timedelta | None:
    return value.astimezone(tz).utcoffset()


@dataclass(frozen=True, slots=True)
class Schedule:
    """A checked schedule: exactly one of cron / every_seconds / at."""

    timezone: str
    cron: str | None = None
    every_seconds: int | None = None
    at: datetime | None = None
    #: `every`: fire times are anchor + k * interval
    anchor: datetime | None = None

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after `after`; None when there is none (a past `at`)."""
        return next(self.iter_after(after), None)

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Fire times strictly after `after`, in order (in the job's zone for cron); they end
        where datetime does (year 9999): a later time cannot be represented, so none comes."""
        try:
            yield from self._iter_after(after)
        except OverflowError:  # `after` near 9999-12-31, or a step past it
            return

    def _iter_after(self, after: datetime) -> Iterator[datetime]:
        if self.cron is not None:
            tz = self.tz
            limit = after.timestamp()
            start = after
            if _offset(after - _LOOKBACK, tz) != _offset(after, tz) or _offset(after + _LOOKBACK, tz) != _offset(after, tz):
                # near a DST change, cronsim (on local wall time) cannot tell which pass of a
                # repeated hour it starts in: start it before the change and skip what is not
                # after `after` (compared as instants: same-zone datetimes compare on wall time)
                start = after - _LOOKBACK
            it = CronSim(self.cron, start.astimezone(tz))
            for _ in range(_SCAN_LIMIT):
                try:
                    value = next(it)
                except (StopIteration, CronSimError):
                    return
                if value.timestamp() > limit:
                    break
            else:
                return
            yield value
            yield from it
        elif self.every_seconds is not None:
            anchor = (self.anchor or after).astimezone(UTC)  # arithmetic on instants, not wall time
            step = self.every_seconds
            elapsed = after.timestamp() - anchor.timestamp()
            k = int(elapsed // step) + 1 if elapsed >= 0 else 0
            t = anchor + timedelta(seconds=k * step)
            while t.timestamp() <= after.timestamp():  # float rounding
                t += timedelta(seconds=step)
            while True:
                yield t.astimezone(self.tz)
                t += timedelta(seconds=step)
        elif self.at is not None:
            if self.at.timestamp() > after.timestamp():
                try:
                    local = self.at.astimezone(self.tz)
                except OverflowError:  # 9999-12-31 in a zone east of UTC: say it in UTC
                    local = self.at
                yield local


def build(timezone: str, *, cron: str | None = None, every: str | None = None, at: str | None = None,
          anchor: datetime | None = None, path: str = "$.params.schedule",
          tz_path: str = "$.params.timezone") -> Schedule:
    """A Schedule from its wire fields; InvalidValue naming the offending field."""
    tz = zone(timezone, tz_path)
    given = [name for name, value in (("cron", cron), ("every", every), ("at", at)) if value is not None]
    if len(given) != 1:
        raise InvalidValue("a schedule has exactly one of cron, every or at", path)
    if cron is not None:
        return Schedule(timezone, cron=check_cron(cron, f"{path}.cron"))
    if every is not None:
        return Schedule(timezone, every_seconds=parse_every(every, f"{path}.every"), anchor=anchor)
    assert at is not None
    return Schedule(timezone, at=parse_instant(at, tz, f"{path}.at"))


def iso(value: datetime) -> str:
    """ISO-8601 with its offset; UTC as `Z`."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
