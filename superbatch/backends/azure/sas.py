"""SAS lifetimes that fit the run.

A Batch task carries its SAS URLs for life: a task that waits past their
expiry fails its download (or its upload). The journal keeps when the SAS of
the current job's tasks expire; a resumed run whose waiting tasks (active,
never started) are near that moment replaces them with tasks of fresh SAS
URLs, under new ids (<run>-<i>-r<n>), the old ones deleted first.
"""

from datetime import datetime, timedelta, timezone

KEY = "sas_expires"  # in the backend's journal state: ISO time, UTC
MIN_LEFT = timedelta(hours=1)


def expiry(sas_hours: float) -> datetime:
    """When SAS URLs made from now on expire at the earliest."""
    return datetime.now(timezone.utc) + timedelta(hours=sas_hours)


def record(state: dict, moment: datetime, renewed: bool = False) -> None:
    """Note the expiry of tasks just added: the earliest among the job's tasks,
    unless every waiting task has just been renewed."""
    known = state.get(KEY)
    if known and not renewed:
        moment = min(moment, datetime.fromisoformat(known))
    state[KEY] = moment.isoformat()


def near(state: dict, sas_hours: float) -> bool:
    """Whether the journal's SAS have less than a quarter of their lifetime,
    or less than an hour, left."""
    known = state.get(KEY)
    if not known:
        return False
    left = datetime.fromisoformat(known) - datetime.now(timezone.utc)
    return left < max(MIN_LEFT, timedelta(hours=sas_hours) / 4)
