"""The limiter's semantics, the same in every storage: memory, Redis through the gateway's own
scripts (one round trip per step), and Redis through ``limits``' calls one by one (as with
Redis Cluster). The end-to-end tests (test_security_e2e.py) check them through the gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from qwengw.config import hash_key, load_settings
from qwengw.errors import RateLimited, ServiceUnavailable
from qwengw.ratelimit import Limiter

from .conftest import RedisServer

BACKENDS = ["memory", "redis-scripts", "redis-steps"]


@pytest.fixture(scope="module")
def redis_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest, redis_module: RedisServer) -> Any:
    """make(rate_limit=..., auth=...) → a Limiter on a fresh storage of this backend."""
    return _maker(request.param, redis_module)


@pytest.fixture(params=[b for b in BACKENDS if b.startswith("redis")])
def make_redis(request: pytest.FixtureRequest, redis_module: RedisServer) -> Any:
    """As make, for the storages that can go down (memory:// lives in the worker)."""
    return _maker(request.param, redis_module)


def _maker(backend: str, redis_module: RedisServer) -> Any:

    def build(**sections: Any) -> Limiter:
        storage = "memory://"
        if backend.startswith("redis"):
            redis_module.flush()
            storage = redis_module.url
        cfg: dict[str, Any] = {
            "rate_limit": {"enabled": True, "storage": storage, **sections.get("rate_limit", {})},
            "auth": {
                "enabled": True,
                "keys": [{"id": "bot", "sha256": hash_key("k"), **sections.get("key", {})}],
                **sections.get("auth", {}),
            },
        }
        settings = load_settings(cfg)
        limiter = Limiter(settings.rate_limit, settings.auth)
        assert (limiter.scripts is not None) == backend.startswith("redis")
        if backend == "redis-steps":
            limiter.scripts = None
        return limiter

    build.backend = backend  # type: ignore[attr-defined]
    return build


def test_moving_window_headers_and_refusal(make: Any) -> None:
    limiter = make(rate_limit={"max_requests": 3, "window_seconds": 6})
    decisions = [limiter.hit("bot", None) for _ in range(3)]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    assert all(d.limit == 3 and 1 <= d.reset_seconds <= 6 for d in decisions)
    with pytest.raises(RateLimited) as refused:
        limiter.hit("bot", None)
    headers = refused.value.headers
    assert 5 <= int(headers["Retry-After"]) <= 6
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert limiter.hit("someone-else", None).remaining == 2  # per identity


def test_several_limits_refused_by_one_count_none(make: Any) -> None:
    limiter = make(key={"rate_limit": "5/hour;1/second"})
    first = limiter.hit("bot", "bot")
    assert (first.limit, first.remaining) == (1, 0)  # the tightest limit speaks
    for _ in range(3):
        with pytest.raises(RateLimited) as refused:
            limiter.hit("bot", "bot")
        assert refused.value.headers["x-ratelimit-limit-requests"] == "1"
    hourly = limiter.key_items["bot"][0]
    assert hourly.amount == 5
    assert limiter.window.get_window_stats(hourly, "req", "bot").remaining == 4  # refusals: free


def test_scripts_count_in_the_windows_limits_reads(make: Any) -> None:
    limiter = make(rate_limit={"max_requests": 10, "window_seconds": 60})
    for _ in range(4):
        limiter.hit("bot", None)
    stats = limiter.window.get_window_stats(limiter.default_item, "req", "bot")
    assert stats.remaining == 6
    assert limiter.window.hit(limiter.default_item, "req", "bot")  # and limits' hits count too
    assert limiter.hit("bot", None).remaining == 4


def test_concurrency_slots(make: Any) -> None:
    limiter = make()
    assert limiter.check_caller(None, "bot", 2) and limiter.check_caller(None, "bot", 2)
    with pytest.raises(RateLimited) as busy:
        limiter.check_caller(None, "bot", 2)
    assert busy.value.code == "concurrency_limit_exceeded"
    assert busy.value.headers["Retry-After"] == "1"
    assert limiter.check_caller(None, "other", 2)  # per identity
    limiter.release("bot")
    assert limiter.check_caller(None, "bot", 2)  # a refusal took nothing
    assert not limiter.check_caller(None, "bot", None)  # no cap: nothing to take or release


def test_releases_beyond_takes_do_not_grant_extra_slots(make: Any) -> None:
    limiter = make()
    limiter.release("bot")
    limiter.release("bot")
    assert limiter.check_caller(None, "bot", 1)
    with pytest.raises(RateLimited):
        limiter.check_caller(None, "bot", 1)


def test_failed_auth_blocks_the_ip(make: Any) -> None:
    limiter = make(auth={"max_failures": 3, "failure_window_seconds": 60})
    for _ in range(3):
        limiter.auth_failed("10.0.0.1")
    with pytest.raises(RateLimited) as blocked:
        limiter.auth_failed("10.0.0.1")
    assert blocked.value.code == "too_many_auth_failures"
    assert 55 <= int(blocked.value.headers["Retry-After"]) <= 60
    # A right key from that IP is refused too, and takes no slot.
    with pytest.raises(RateLimited) as right_key:
        limiter.check_caller("10.0.0.1", "bot", 1)
    assert right_key.value.code == "too_many_auth_failures"
    assert limiter.check_caller("10.0.0.2", "bot", 1)  # other addresses are not affected
    stats = limiter.window.get_window_stats(limiter.auth_item, "authfail", "10.0.0.1")
    assert stats.remaining == 0  # the blocked attempt was not counted beyond the limit


def test_storage_down_fails_closed_or_open(make_redis: Any, redis_module: RedisServer) -> None:
    closed = make_redis()
    open_ = make_redis(rate_limit={"on_storage_error": "open"})
    redis_module.stop()
    try:
        with pytest.raises(ServiceUnavailable):
            closed.check_caller("10.0.0.1", "bot", 1)
        with pytest.raises(ServiceUnavailable):
            closed.hit("bot", None)
        assert closed.storage_problem() is not None
        assert not open_.check_caller("10.0.0.1", "bot", 1)  # let through, no slot to release
        assert open_.hit("bot", None) is None
    finally:
        redis_module.start()


def test_window_moves_on(make: Any) -> None:
    limiter = make(rate_limit={"max_requests": 2, "window_seconds": 1})
    limiter.hit("bot", None)
    assert limiter.hit("bot", None).remaining == 0
    with pytest.raises(RateLimited):
        limiter.hit("bot", None)
    time.sleep(1.1)  # both entries leave the window
    assert limiter.hit("bot", None).remaining == 1
    assert limiter.window.get_window_stats(limiter.default_item, "req", "bot").remaining == 1


def test_admission_refusals_take_nothing(make: Any) -> None:
    """Slot and rate in one admission: a caller at its cap uses up no rate, a caller refused by
    the rate keeps no slot."""
    limiter = make(rate_limit={"max_requests": 2, "window_seconds": 60})
    first = limiter.admit(None, "bot", 1, rate=True)
    assert first.slot and first.decision.remaining == 1
    with pytest.raises(RateLimited) as busy:
        limiter.admit(None, "bot", 1, rate=True)
    assert busy.value.code == "concurrency_limit_exceeded"
    assert limiter.window.get_window_stats(limiter.default_item, "req", "bot").remaining == 1
    limiter.release("bot")
    assert limiter.admit(None, "bot", 1, rate=True).decision.remaining == 0
    limiter.release("bot")
    with pytest.raises(RateLimited) as rate:
        limiter.admit(None, "bot", 1, rate=True)
    assert rate.value.code == "rate_limit_exceeded"
    assert rate.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert limiter.check_caller(None, "bot", 1)  # the rate refusal kept no slot
    with pytest.raises(RateLimited):
        limiter.check_caller(None, "bot", 1)


def test_admission_checks_in_order(make: Any) -> None:
    """Failed-auth block, then concurrency, then rate: the first refusal is the one heard."""
    limiter = make(
        rate_limit={"max_requests": 1, "window_seconds": 60},
        auth={"max_failures": 1, "failure_window_seconds": 60},
    )
    limiter.admit("10.0.0.1", "bot", 1, rate=True)  # slot held, rate used up
    with pytest.raises(RateLimited) as busy:
        limiter.admit("10.0.0.1", "bot", 1, rate=True)
    assert busy.value.code == "concurrency_limit_exceeded"
    limiter.auth_failed("10.0.0.1")
    with pytest.raises(RateLimited) as blocked:
        limiter.admit("10.0.0.1", "bot", 1, rate=True)
    assert blocked.value.code == "too_many_auth_failures"
    assert limiter.admit("10.0.0.2", "bot", 2).slot  # another address is not blocked


def test_redis_admission_is_one_round_trip(redis_module: RedisServer) -> None:
    import redis

    limiter = _maker("redis-scripts", redis_module)(key={"rate_limit": "5/hour;3/second"})
    limiter.admit("10.0.0.9", "warm", 1, rate=True, key_id="bot")  # scripts loaded once
    limiter.release("warm")
    client = redis.Redis.from_url(redis_module.url)
    client.config_resetstat()
    admission = limiter.admit("10.0.0.1", "bot", 2, rate=True, key_id="bot")
    limiter.release("bot")
    # Each script call is one EVALSHA (the commands it runs inside Redis are counted apart).
    evalsha = client.info("commandstats")["cmdstat_evalsha"]["calls"]
    assert admission.slot and admission.decision.remaining == 2  # 3/second is the tightest
    assert evalsha == 2  # the admission, then the release


def test_a_release_missed_during_a_redis_stall_is_sent_when_it_is_back(
    make_redis: Any, redis_module: RedisServer
) -> None:
    """A short stall (not a restart: the counters survive it) must not leave the slot taken
    until its counter expires an hour later."""
    import os
    import signal

    limiter = make_redis()
    assert limiter.check_caller(None, "bot", 1)
    assert redis_module.proc is not None
    os.kill(redis_module.proc.pid, signal.SIGSTOP)
    try:
        limiter.release("bot")  # times out: kept to send later
    finally:
        os.kill(redis_module.proc.pid, signal.SIGCONT)
    time.sleep(1.1)  # the limiter leaves a failed storage alone for a second
    assert limiter.check_caller(None, "bot", 1)  # the missed release went first
    with pytest.raises(RateLimited):
        limiter.check_caller(None, "bot", 1)  # and only once
