"""memory:// (qwengw/memory_storage.py) under limits' own moving-window strategy: the same
answers as limits' MemoryStorage, on a clock the test moves."""

from __future__ import annotations

from typing import Any

import limits.storage.memory
import pytest
from limits import RateLimitItemPerSecond, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from qwengw import memory_storage
from qwengw.memory_storage import SWEEP_SECONDS, WorkerMemoryStorage


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(memory_storage, "time", c)
    monkeypatch.setattr(limits.storage.memory, "time", c)  # limits' own, to compare with
    return c


def test_a_moving_window_admits_n_in_any_window(clock: Clock) -> None:
    window = MovingWindowRateLimiter(WorkerMemoryStorage())
    item = RateLimitItemPerSecond(3, 10)
    for _ in range(3):
        assert window.hit(item, "key")
        clock.now += 1
    assert not window.hit(item, "key")  # 3 in the last 10 s
    assert not window.test(item, "key")
    stats = window.get_window_stats(item, "key")
    assert stats.remaining == 0 and stats.reset_time == pytest.approx(1_000_000.0 + 10)
    clock.now = 1_000_000.0 + 10.01  # the first has just left the window
    assert window.hit(item, "key")
    assert not window.hit(item, "key")
    assert window.hit(item, "other")  # keys are separate


def test_several_limits_and_costs_as_limits_counts_them(clock: Clock) -> None:
    ours = MovingWindowRateLimiter(WorkerMemoryStorage())
    theirs = MovingWindowRateLimiter(MemoryStorage())
    items = [parse("5/second"), parse("8/minute")]
    answers: list[tuple[Any, ...]] = []
    for step in range(40):
        row = []
        for window in (ours, theirs):
            got = [window.hit(item, "k", cost=1 + step % 2) for item in items]
            stats = [window.get_window_stats(item, "k").remaining for item in items]
            row.append((got, stats))
        answers.append(tuple(row))
        clock.now += 0.37
    assert all(a == b for a, b in answers), [r for r in answers if r[0] != r[1]][:3]
    assert not ours.hit(items[0], "k", cost=6)  # more than the limit at once: never


def test_counters_expire_a_fixed_time_after_the_first_increment(clock: Clock) -> None:
    storage = WorkerMemoryStorage()
    assert storage.incr("slots", 60) == 1
    clock.now += 30
    assert storage.incr("slots", 60) == 2
    assert storage.incr("slots", 60, -1) == 1
    assert storage.get("slots") == 1
    clock.now += 31
    assert storage.get("slots") == 0
    assert storage.incr("slots", 60) == 1  # a new counter
    storage.clear("slots")
    assert storage.get("slots") == 0


def test_keys_nobody_uses_are_forgotten(clock: Clock) -> None:
    storage = WorkerMemoryStorage()
    window = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerSecond(5, 1)
    for n in range(1000):
        window.hit(item, f"caller-{n}")
        storage.incr(f"slot-{n}", 5)
    assert len(storage._windows) == 1000 and len(storage._counters) == 1000
    clock.now += SWEEP_SECONDS + 1
    window.hit(item, "still-here")
    assert len(storage._windows) == 1  # only the key just used
    assert storage._counters == {}
