"""The circuit breaker as a pure state machine, with an injected clock."""

from __future__ import annotations

from qwengw.upstream import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker(3, 30, Clock(), on_change=lambda old, new: changes.append((old, new)))
    b.failure()
    b.failure()
    b.success()  # a success in between resets the count
    b.failure()
    b.failure()
    assert b.state == CLOSED and b.allow()
    b.failure()
    assert b.state == OPEN and not b.allow()
    assert changes == [(CLOSED, OPEN)]


def test_one_trial_after_open_seconds_then_closed_or_open_again() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 30, clock)
    b.failure()
    clock.now += 10
    assert not b.allow() and b.retry_after() == 20
    clock.now += 20
    assert b.allow() and b.state == HALF_OPEN  # exactly one trial...
    assert not b.allow() and not b.allow()  # ...the others still fail fast
    b.failure()
    assert b.state == OPEN and b.retry_after() == 30
    clock.now += 30
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.allow() and b.allow()


def test_a_trial_that_tells_nothing_lets_another_one_through() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 5, clock)
    b.failure()
    clock.now += 5
    assert b.allow()
    b.release()  # e.g. the client left before Ollama answered
    assert b.allow() and b.state == HALF_OPEN
