"""A phone number's time zones, from libphonenumber's geocoding data (`phonenumbers`)."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as number_zones


@lru_cache(maxsize=4096)
def zone_names(number: str) -> tuple[str, ...]:
    """IANA zones the number may ring in. A number the library does not recognise as valid
    gets the zones of the longest prefix of its digits the data lists, down to the country
    code (every zone of that country), so checking all of them stays on the safe side.
    Empty when even that is unknown."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return ()
    names = tuple(number_zones.time_zones_for_number(parsed))
    if names == (number_zones.UNKNOWN_TIMEZONE,):
        names = tuple(number_zones.time_zones_for_geographical_number(parsed))
    return tuple(n for n in names if n != number_zones.UNKNOWN_TIMEZONE)


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def valid_zone(name: str) -> bool:
    return zone(name) is not None
