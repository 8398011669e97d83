"""The report's time series: cumulative rates per arm, and minutes summed into buckets."""

from __future__ import annotations

import pytest

from streamrec.stream.cli.experiment_report import cumulative, rebucket

SERIES = {
    100: {"lists": 10, "click": 1},
    101: {"lists": 30, "click": 5, "purchase": 1},
    103: {"lists": 0, "click": 0},  # nothing served in that minute: no point
    104: {"lists": 10, "click": 4},
}


def test_cumulative_rates_add_up_successes_and_lists_minute_by_minute():
    minutes, rates = cumulative(SERIES, "click")
    assert minutes == [100, 101, 104]
    assert rates == pytest.approx([1 / 10, 6 / 40, 10 / 50])


def test_minutes_are_summed_into_buckets_without_losing_counts():
    buckets = rebucket(SERIES, 2)
    assert buckets == {
        100: {"lists": 40, "click": 6, "purchase": 1},
        102: {"lists": 0, "click": 0},
        104: {"lists": 10, "click": 4},
    }
    assert rebucket(SERIES, 1) == SERIES
