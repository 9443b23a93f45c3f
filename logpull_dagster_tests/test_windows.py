import datetime as dt

import pytest

from logpull_dagster.windows import (
    UTC,
    Window,
    due_windows,
    is_aligned,
    key_for_window,
    parse_duration,
    rfc3339,
    window_for_key,
)


def t(h: int, m: int = 0, d: int = 26) -> dt.datetime:
    return dt.datetime(2026, 11, d, h, m, tzinfo=UTC)


def test_windows_are_half_open():
    w = Window(t(10), t(11))
    assert w.contains(t(10)) and not w.contains(t(11)) and w.contains(t(10, 59))


def test_keys_match_dagster_partition_keys():
    assert window_for_key("hourly", "2026-11-26-10:00") == Window(t(10), t(11))
    assert window_for_key("daily", "2026-11-26") == Window(t(0), t(0, d=27))
    assert key_for_window("hourly", Window(t(10), t(11))) == "2026-11-26-10:00"


def test_a_window_is_due_once_its_end_plus_settle_lag_has_passed():
    due = due_windows("hourly", t(8), t(11, 14), dt.timedelta(minutes=15))
    assert [w.start for w in due] == [t(8), t(9)]
    due = due_windows("hourly", t(8), t(11, 15), dt.timedelta(minutes=15))
    assert [w.start for w in due] == [t(8), t(9), t(10)]


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("60s", 60), ("1h30m", 5400), ("2d", 172800),
                                               ("500ms", 0.5), (42, 42)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("bad", ["15", "m", "1x", "", "-5m", "1h 2"])
def test_bad_durations_say_how_to_write_one(bad):
    with pytest.raises(ValueError, match="15m"):
        parse_duration(bad)


def test_alignment_and_formatting():
    assert is_aligned("hourly", t(10)) and not is_aligned("hourly", t(10, 5)) and not is_aligned("daily", t(10))
    assert rfc3339(t(10)) == "2026-11-26T10:00:00Z"
    assert rfc3339(t(10).replace(microsecond=657000)) == "2026-11-26T10:00:00.657Z"
