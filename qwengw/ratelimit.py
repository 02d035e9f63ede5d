"""Request-rate, concurrency and failed-auth limits, composed from the ``limits`` library.

Moving window (exact: a request is admitted iff fewer than N were admitted in the last window),
stored in ``memory://`` (per process, memory_storage.py) or Redis (exact across workers and
instances: each step is one atomic Lua script there, redis_scripts.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond, parse_many
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from .config import AuthSettings, RateLimitSettings, redact_uri
from .errors import RateLimited, ServiceUnavailable
from .memory_storage import WorkerMemoryStorage
from .redis_scripts import RedisScripts

log = logging.getLogger("qwengw.ratelimit")

CONCURRENCY_TTL = 3600  # a crashed worker's in-flight count expires after this
HEALTH_CACHE_SECONDS = 2.0  # /ready asks the storage at most this often per worker


@dataclass(frozen=True)
class Admission:
    slot: bool  # an in-flight slot was taken: release it at the end
    decision: Decision | None  # the tightest rate window after counting (None: not counted)


@dataclass(frozen=True)
class Decision:
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": f"{self.reset_seconds}s",
        }


def _storage_options() -> dict[str, float | bool | object]:
    """Options for a remote (Redis) storage."""
    # redis-py waits 5 s and retries 10 times by default: a hung Redis would stall every request.
    opts: dict[str, float | bool | object] = {
        "socket_connect_timeout": 0.25,
        "socket_timeout": 0.25,
    }
    try:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        opts["retry"] = Retry(NoBackoff(), 0)
    except ImportError:  # pragma: no cover - redis is required for redis:// anyway
        pass
    return opts


def _reason(exc: BaseException) -> str:
    """Why a storage call failed, in a few words (never a URI or a password)."""
    cause = getattr(exc, "storage_error", None) or exc
    text = str(cause).splitlines()[0][:200] if str(cause) else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _inflight_key(identity: str) -> str:
    return f"qwengw/inflight/{identity}"


class Limiter:
    """Owns the storage and answers: may this caller start a request now?"""

    def __init__(
        self,
        rl: RateLimitSettings,
        auth: AuthSettings,
        clock: Callable[[], float] = time.time,
        on_slot: Callable[[str, int], None] = lambda identity, delta: None,
    ) -> None:
        self.settings = rl
        self.clock = clock
        self.on_slot = on_slot  # (identity, +1 | -1): the in-flight gauge per key
        self.remote = not rl.storage.startswith("memory")
        self.storage = (
            storage_from_string(rl.storage, wrap_exceptions=True, **_storage_options())
            if self.remote
            else WorkerMemoryStorage(wrap_exceptions=True)  # limits' own is slow under gevent
        )
        self.window = MovingWindowRateLimiter(self.storage)
        # Redis: each step in one round trip (redis_scripts.py); elsewhere limits' calls.
        self.scripts = RedisScripts.for_storage(self.storage)
        self.default_item: RateLimitItem = RateLimitItemPerSecond(
            rl.max_requests, rl.window_seconds
        )
        self.key_items = {k.id: parse_many(k.rate_limit) for k in auth.keys if k.rate_limit}
        self.auth_item = RateLimitItemPerSecond(auth.max_failures, auth.failure_window_seconds)
        self.fail_open = rl.on_storage_error == "open"
        self.uri = redact_uri(rl.storage)
        # Anything that counts: rates, in-flight slots, failed authentication.
        self.in_use = bool(
            rl.enabled
            or rl.max_concurrent
            or auth.enabled
            or any(k.max_concurrent or k.rate_limit for k in auth.keys)
        )
        self._down_until = 0.0
        self._storage_was_down = False
        self._health: tuple[float, str | None] = (0.0, None)
        self._unreleased: list[str] = []  # in-flight keys whose release the storage missed

    # -- storage health: pause briefly after a failure, so that a hung Redis costs one timeout,
    # not one per request
    def _call(self, fn: Callable[[], object]) -> object:
        now = time.monotonic()
        if now < self._down_until:
            raise StorageError(ConnectionError("storage marked down"))
        try:
            result = fn()
        except StorageError as exc:
            self._down_until = time.monotonic() + 1.0
            self._note_down(_reason(exc))
            raise
        self._note_up()
        return result

    def _note_down(self, reason: str) -> None:
        if not self._storage_was_down:
            log.error(
                "rate-limit storage %s unavailable (%s); failing %s",
                self.uri,
                reason,
                "open: limits are not enforced" if self.fail_open else "closed: 503 to clients",
            )
        self._storage_was_down = True

    def _note_up(self) -> None:
        if self._storage_was_down:
            log.warning("rate-limit storage %s is back", self.uri)
            self._storage_was_down = False

    def storage_problem(self) -> str | None:
        """None when the storage answers (or is in-process); else why not. For /ready."""
        if not self.remote:
            return None
        until, problem = self._health
        now = time.monotonic()
        if now < until:
            return problem
        problem = None
        try:
            connection = getattr(self.storage, "get_connection", None)
            if connection is not None:
                connection().ping()  # the real error, where check() would only say False
            elif not self.storage.check():
                problem = "health check failed"
        except Exception as exc:  # whatever the client library raises: it is down for us
            problem = _reason(exc)
        if problem is None:
            self._note_up()
        else:
            self._note_down(problem)
        self._health = (time.monotonic() + HEALTH_CACHE_SECONDS, problem)
        return problem

    def _storage_failed(self) -> None:
        if not self.fail_open:
            raise ServiceUnavailable(
                "rate limiting is temporarily unavailable; retry shortly",
                headers={"Retry-After": "1"},
            )

    def _reset_seconds(self, oldest: float, item: RateLimitItem) -> int:
        """Whole seconds until the oldest entry leaves ``item``'s window (≥ 1)."""
        return max(1, math.ceil(oldest + item.get_expiry() - self.clock()))

    # -- the caller, before its body is read
    def admit(
        self,
        ip: str | None,
        identity: str,
        limit: int | None,
        *,
        rate: bool = False,
        key_id: str | None = None,
    ) -> Admission:
        """Refuse an ``ip`` blocked for failed authentication (None: not checked, as when auth
        is off), take one of ``identity``'s ``limit`` in-flight slots (None: no cap), and when
        ``rate``, count one request against the rate limits of ``key_id`` (its own, or the
        default). Refused in that order (``RateLimited``); a refusal takes and counts nothing:
        a caller at its concurrency cap uses up no rate, one refused by a rate limit keeps no
        slot, and with several limits on a key (``"10/second;1000/day"``) every one is tested
        before any is counted.

        One round trip with Redis. ``release`` the slot at the end when one was taken.
        """
        items = self.key_items.get(key_id or "", [self.default_item]) if rate else []
        if ip is None and not limit and not items:
            return Admission(False, None)
        if self._unreleased and time.monotonic() >= self._down_until:
            self._send_releases()  # the storage may be back: settle what it missed first
        try:
            if self.scripts is not None:
                admission = self._admit_script(ip, identity, limit, items)
            else:
                admission = self._admit_steps(ip, identity, limit, items)
        except StorageError:
            self._storage_failed()
            return Admission(False, None)  # failing open: let through, nothing to release
        if admission.slot:
            self.on_slot(identity, 1)
        return admission

    def check_caller(self, ip: str | None, identity: str, limit: int | None) -> bool:
        """``admit`` without the rate: True when a slot was taken."""
        return self.admit(ip, identity, limit).slot

    def hit(self, identity: str, key_id: str | None) -> Decision | None:
        """``admit`` with the rate only: the window after counting (None: failing open)."""
        return self.admit(None, identity, None, rate=True, key_id=key_id).decision

    def _admit_script(
        self, ip: str | None, identity: str, limit: int | None, items: list[RateLimitItem]
    ) -> Admission:
        scripts = self.scripts
        assert scripts is not None
        auth_key = self.auth_item.key_for("authfail", ip or "")
        keys = [scripts.key(auth_key), scripts.key(_inflight_key(identity))]
        keys += [scripts.key(item.key_for("req", identity)) for item in items]
        args: list[float] = [
            time.time(),
            self.auth_item.amount if ip is not None else 0,
            self.auth_item.get_expiry(),
            limit or 0,
            CONCURRENCY_TTL,
        ]
        for item in items:
            args += [item.amount, item.get_expiry()]
        verdict: list[Any] = self._call(lambda: scripts.admit(keys, args))  # type: ignore[assignment]
        outcome = verdict[0]
        if outcome == b"auth":
            raise self._auth_refusal(self._reset_seconds(float(verdict[1]), self.auth_item))
        if outcome == b"busy":
            raise self._busy(limit)
        if outcome == b"rate":
            item = items[int(verdict[1]) - 1]
            reset = self._reset_seconds(float(verdict[2]), item)
            raise self._refusal(item, Decision(item.amount, 0, reset))
        decisions = [
            Decision(
                item.amount, item.amount - int(count), self._reset_seconds(float(oldest), item)
            )
            for item, oldest, count in zip(items, verdict[1::2], verdict[2::2], strict=True)
        ]
        tightest = min(decisions, key=lambda d: d.remaining) if decisions else None
        return Admission(bool(limit), tightest)  # the first of the tightest

    def _admit_steps(
        self, ip: str | None, identity: str, limit: int | None, items: list[RateLimitItem]
    ) -> Admission:
        """``limits``' calls one by one (memory://, Redis Cluster): the same rules."""
        if ip is not None and not self._call(
            lambda: self.window.test(self.auth_item, "authfail", ip)
        ):
            raise self._auth_refusal(self._decision(self.auth_item, "authfail", ip).reset_seconds)
        taken = False
        key = _inflight_key(identity)
        if limit:
            n = self._call(lambda: self.storage.incr(key, CONCURRENCY_TTL, 1))
            if int(n) > limit:  # type: ignore[call-overload]
                self._call(lambda: self.storage.incr(key, CONCURRENCY_TTL, -1))
                raise self._busy(limit)
            taken = True
        if not items:
            return Admission(taken, None)
        try:
            return Admission(taken, self._hit_steps(items, identity))
        except BaseException:
            if taken:  # refused by the rate (or the storage failed): keep no slot
                try:
                    self._release_one(key)
                except StorageError:
                    pass  # it expires by itself
            raise

    def _busy(self, limit: int | None) -> RateLimited:
        return RateLimited(
            f"too many requests in flight for this caller (max {limit}); retry when one ends",
            code="concurrency_limit_exceeded",
            headers={"Retry-After": "1"},
        )

    def _auth_refusal(self, reset: int) -> RateLimited:
        return RateLimited(
            "too many failed authentication attempts; retry later",
            code="too_many_auth_failures",
            headers={"Retry-After": str(reset)},
        )

    def release(self, identity: str) -> None:
        """Give ``identity``'s slot back. While the storage is down the release waits in this
        worker and is sent before its next admission: a release lost to a short Redis stall
        would otherwise hold the slot until the counter expires (an hour), and a key at its
        cap would be locked out that long."""
        self.on_slot(identity, -1)
        self._unreleased.append(_inflight_key(identity))
        self._send_releases()

    def _send_releases(self) -> None:
        while self._unreleased:
            key = self._unreleased.pop(0)  # taken first: another greenlet may drain beside us
            try:
                self._release_one(key)
            except StorageError:
                self._unreleased.insert(0, key)
                log.warning(
                    "could not release %d in-flight slot(s) (storage down); sent when it is back",
                    len(self._unreleased),
                )
                return

    def _release_one(self, key: str) -> None:
        if self.scripts is not None:
            scripts = self.scripts
            self._call(lambda: scripts.release(scripts.key(key)))
        elif int(self._call(lambda: self.storage.incr(key, CONCURRENCY_TTL, -1))) < 0:  # type: ignore[call-overload]
            self._call(lambda: self.storage.clear(key))

    def _hit_steps(self, items: list[RateLimitItem], identity: str) -> Decision:
        if len(items) > 1:
            for item in items:
                if not self._call(lambda item=item: self.window.test(item, "req", identity)):
                    raise self._refusal(item, self._decision(item, "req", identity))
        decision: Decision | None = None
        for item in items:
            if not self._call(lambda item=item: self.window.hit(item, "req", identity)):
                raise self._refusal(item, self._decision(item, "req", identity))
            d = self._decision(item, "req", identity)
            if decision is None or d.remaining < decision.remaining:
                decision = d
        assert decision is not None  # items is never empty
        return decision

    def _decision(self, item: RateLimitItem, namespace: str, identity: str) -> Decision:
        """Remaining requests and whole seconds until one more would be admitted (≥ 1)."""
        stats = self._call(lambda: self.window.get_window_stats(item, namespace, identity))
        reset = max(1, math.ceil(stats.reset_time - self.clock()))  # type: ignore[attr-defined]
        return Decision(item.amount, stats.remaining, reset)  # type: ignore[attr-defined]

    def _refusal(self, item: RateLimitItem, d: Decision) -> RateLimited:
        return RateLimited(
            f"rate limit reached: {item.amount} requests per "
            f"{item.multiples} {item.GRANULARITY.name}(s); retry in {d.reset_seconds}s",
            headers={"Retry-After": str(d.reset_seconds), **d.headers()},
        )

    # -- failed authentication, per client IP
    def auth_failed(self, ip: str) -> None:
        """Count a failed attempt; raise ``RateLimited`` instead when ``ip`` is blocked already
        (a blocked attempt is not counted: the window moves on as if it had not come)."""
        try:
            if not self._call(lambda: self.window.hit(self.auth_item, "authfail", ip)):
                raise self._auth_refusal(
                    self._decision(self.auth_item, "authfail", ip).reset_seconds
                )
        except StorageError:
            self._storage_failed()
