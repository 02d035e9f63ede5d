"""A request's limit checks in Redis as single Lua scripts: one round trip per step.

``limits`` makes one call per operation (moving-window test, hit, window stats, counter
increment), each its own round trip: five per chat request, ~1 ms in all on a 2-core box
(docs/benchmarks.md). Here a request costs two: its admission (failed-auth block, in-flight
slot, every rate window tested then counted, the window stats for the headers) and the release
of its slot. These scripts do a step's operations together, atomically, on the same
keys and lists as ``limits``' own scripts (``acquire_moving_window.lua``, ``moving_window.lua``)
and with the same rule, so the counts are the ones ``limits`` reads and writes: nothing changes
for a gateway of an older version sharing the Redis.

Not for Redis Cluster: a script may only touch keys of one hash slot, and a caller's keys are
spread over several; there the limiter makes ``limits``' calls one by one.
"""

from __future__ import annotations

from typing import Any

from limits.errors import StorageError
from limits.storage import RedisClusterStorage, RedisStorage, Storage

# A moving window is a list of timestamps, newest first, at most `limit` long. A request is
# admitted iff the limit-th newest entry (index limit - 1) is older than the window.
_WINDOW = """
local function full(key, limit, cutoff)
    local entry = redis.call('lindex', key, limit - 1)
    if entry and tonumber(entry) >= cutoff then
        return entry
    end
    return nil
end
"""

# A caller's whole admission, before its body is read.
# KEYS: the client IP's failed-auth window, the caller's in-flight counter, then one moving
# window per rate limit on the caller (none when the rate is not counted for this request).
# ARGV: now, auth limit (0: not checked), auth window seconds, slot limit (0: none), slot TTL,
# then (limit, seconds) per rate window.
# Returns {'auth', oldest entry} | {'busy'} | {'rate', i, oldest entry} when the i-th rate limit
# refuses (nothing is counted, no slot is kept) | {'ok', oldest_1, count_1, ...}: each rate
# window after counting this request. A slot is held after 'ok' iff a slot limit was given.
ADMIT = (
    _WINDOW
    + """
local now = tonumber(ARGV[1])
local auth_limit = tonumber(ARGV[2])
if auth_limit > 0 then
    local oldest = full(KEYS[1], auth_limit, now - tonumber(ARGV[3]))
    if oldest then
        return {'auth', oldest}
    end
end
local slot_limit = tonumber(ARGV[4])
if slot_limit > 0 then
    local n = redis.call('incrby', KEYS[2], 1)
    if n > slot_limit then
        redis.call('incrby', KEYS[2], -1)
        return {'busy'}
    end
    -- Expires a TTL after the last slot taken (not the first): a key that always has a
    -- request in flight keeps its count; one whose releases were lost forgets it.
    redis.call('expire', KEYS[2], ARGV[5])
end
-- Every rate limit is tested before any is counted: a refusal uses up none of them.
for i = 3, #KEYS do
    local a = 2 * i
    local oldest = full(KEYS[i], tonumber(ARGV[a]), now - tonumber(ARGV[a + 1]))
    if oldest then
        if slot_limit > 0 then
            redis.call('incrby', KEYS[2], -1)
        end
        return {'rate', i - 2, oldest}
    end
end
local stats = {'ok'}
for i = 3, #KEYS do
    local a = 2 * i
    local key, limit, expiry = KEYS[i], tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    redis.call('lpush', key, now)
    redis.call('ltrim', key, 0, limit - 1)
    redis.call('expire', key, expiry)
    -- Entries out of the window count for nobody: dropped from the tail (each once), the
    -- window is then the whole list (moving_window.lua finds the same by binary search).
    local cutoff = now - expiry
    local last = redis.call('lindex', key, -1)
    while tonumber(last) < cutoff do
        redis.call('rpop', key)
        last = redis.call('lindex', key, -1)
    end
    stats[#stats + 1] = tostring(tonumber(last))
    stats[#stats + 1] = redis.call('llen', key)
end
return stats
"""
)

# KEYS: the caller's in-flight counter. Below zero (more releases than takes, e.g. after Redis
# lost its data) the counter is dropped rather than left to grant extra slots.
RELEASE = """
local n = redis.call('incrby', KEYS[1], -1)
if n < 0 then
    redis.call('del', KEYS[1])
end
return n
"""


class RedisScripts:
    """The scripts above, registered on a ``limits`` Redis storage's client."""

    def __init__(self, storage: RedisStorage) -> None:
        self.storage = storage
        client = storage.get_connection()
        self._admit = client.register_script(ADMIT)
        self._release = client.register_script(RELEASE)

    @classmethod
    def for_storage(cls, storage: Storage) -> RedisScripts | None:
        if isinstance(storage, RedisStorage) and not isinstance(storage, RedisClusterStorage):
            return cls(storage)
        return None

    def key(self, key: str) -> str:
        return self.storage.prefixed_key(key)

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return script(keys, args)
        except self.storage.base_exceptions as exc:  # as limits' own calls report them
            raise StorageError(exc) from exc

    def admit(self, keys: list[str], args: list[Any]) -> list[Any]:
        return self._run(self._admit, keys, args)  # type: ignore[no-any-return]

    def release(self, key: str) -> int:
        return int(self._run(self._release, [key], []))
