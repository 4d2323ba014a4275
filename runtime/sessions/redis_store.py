"""A session store in Redis, shared by every replica of the service (see store.py for the contract).

Each session is a hash (info, memory bytes, shape, SHA-256, version, tenant) plus a member of its tenant's
sorted set, scored by creation order (pages and quota counts read it: O(log n + page), O(1)); a put is one
Lua script that checks the stored version and writes everything, so replicas never
interleave a session's mutations. Durability is the Redis server's: run it with `appendonly yes` and
`appendfsync always` for every acknowledged write to survive a crash.
"""

from __future__ import annotations

import functools
import secrets

from deltamem.runtime.errors import CommitTooLate, StoreUnavailable
from deltamem.runtime.sessions.records import SessionInfo
from deltamem.runtime.sessions.state_codec import decode_state, encode_state
from deltamem.runtime.sessions.store import (
    StoreConflict,
    StoreMismatch,
    decode_info,
    encode_info,
    identity_problem,
)

_PUT = """
if ARGV[10] ~= '' then
  local now = redis.call('TIME')
  if tonumber(now[1]) + tonumber(now[2]) / 1000000 > tonumber(ARGV[10]) then return -1 end
end
local version = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '' then
  if version then return 0 end
elseif version ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'info', ARGV[2], 'state', ARGV[3], 'shape', ARGV[4], 'sha256', ARGV[5],
           'version', ARGV[6], 'tenant', ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[9], ARGV[8])
return 1
"""
_DELETE = """
local tenant = redis.call('HGET', KEYS[1], 'tenant')
if not tenant then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. tenant, ARGV[2])
return 1
"""


STORE_TIMEOUT_SECONDS = 5.0  # per Redis call: a frozen Redis must not hold a call (and a worker) forever


def _unavailable_on_redis_errors(method):
    """Redis connection errors and timeouts become StoreUnavailable (UNAVAILABLE, retryable); for a put, whose
    script may or may not have run, the message names the version to check."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        import redis

        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            what = f"redis did not answer {method.__name__} ({type(exc).__name__}: {exc})"
            if method.__name__ == "put":
                info = args[0]
                what += (
                    f"; whether session {info.session_id} reached memory_version {info.memory_version} is unknown:"
                    " read the session before retrying (a call with a deadline commits only if redis runs it"
                    " before the deadline)"
                )
            raise StoreUnavailable(what) from None

    return guarded


class RedisStore:
    def __init__(
        self, url: str, identity: dict[str, str], prefix: str = "deltamem", timeout: float = STORE_TIMEOUT_SECONDS
    ):
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._prefix = prefix
        self._put = self._redis.register_script(_PUT)
        self._delete = self._redis.register_script(_DELETE)
        key = f"{prefix}:identity"
        if self._redis.hsetnx(key, "_", "1"):
            self._redis.hset(key, mapping=identity)
        stored = {k.decode(): v.decode() for k, v in self._redis.hgetall(key).items() if k != b"_"}
        if problem := identity_problem(stored, identity, f"redis {url} (prefix {prefix})"):
            raise StoreMismatch(problem)
        self._index_tenants()

    def _index_tenants(self) -> None:
        """Move the unordered tenant sets of a store written before the sorted ones existed into them, once."""
        old = f"{self._prefix}:tenant:"
        for key in self._redis.scan_iter(old + "*"):
            tenant = key.decode()[len(old) :]
            for member in self._redis.smembers(key):
                raw = self._redis.hget(self._session_key(member.decode()), "info")
                if raw is not None:
                    self._redis.zadd(self._tenant_prefix() + tenant, {member: decode_info(raw.decode()).order})
            self._redis.delete(key)

    def _session_key(self, session_id: str) -> str:
        return f"{self._prefix}:session:{session_id}"

    def _tenant_prefix(self) -> str:
        return f"{self._prefix}:tenant-by-order:"

    @_unavailable_on_redis_errors
    def get(self, session_id: str):
        fields = self._redis.hmget(self._session_key(session_id), "info", "state", "shape", "sha256")
        if fields[0] is None:
            return None
        info, data, shape, digest = fields
        state = decode_state(data, shape.decode(), digest.decode(), f"redis session {session_id}")
        return decode_info(info.decode()), state

    @_unavailable_on_redis_errors
    def put(self, info: SessionInfo, state, expected_version: int | None, deadline: float | None = None) -> None:
        data, shape, digest = encode_state(state)
        written = self._put(
            keys=[self._session_key(info.session_id), self._tenant_prefix() + info.tenant],
            args=[
                "" if expected_version is None else str(expected_version),
                encode_info(info),
                data,
                shape,
                digest,
                str(info.memory_version),
                info.tenant,
                info.session_id,
                str(info.order),
                "" if deadline is None else repr(deadline),
            ],
        )
        if written == -1:  # Redis ran the script after the deadline (it was slow or frozen): it wrote nothing
            raise CommitTooLate(
                f"the call's deadline passed before redis committed session {info.session_id}; nothing was written"
            )
        if not written:
            raise StoreConflict(f"session {info.session_id} changed since it was read")

    @_unavailable_on_redis_errors
    def delete(self, session_id: str) -> bool:
        return bool(self._delete(keys=[self._session_key(session_id)], args=[self._tenant_prefix(), session_id]))

    @_unavailable_on_redis_errors
    def list_page(self, tenant: str, after: int | None, limit: int) -> list[SessionInfo]:
        low = "-inf" if after is None else f"({after}"
        ids = self._redis.zrangebyscore(self._tenant_prefix() + tenant, low, "+inf", start=0, num=limit)
        pipe = self._redis.pipeline()
        for session_id in ids:
            pipe.hget(self._session_key(session_id.decode()), "info")
        return [decode_info(raw.decode()) for raw in pipe.execute() if raw is not None]

    @_unavailable_on_redis_errors
    def count_tenant(self, tenant: str) -> int:
        return int(self._redis.zcard(self._tenant_prefix() + tenant))

    @_unavailable_on_redis_errors
    def next_order(self) -> int:
        return int(self._redis.incr(f"{self._prefix}:order"))

    @_unavailable_on_redis_errors
    def count(self) -> int:
        return sum(1 for _ in self._redis.scan_iter(f"{self._prefix}:session:*"))

    @_unavailable_on_redis_errors
    def secret(self, name: str) -> bytes:
        key = f"{self._prefix}:secret:{name}"
        self._redis.set(key, secrets.token_bytes(32), nx=True)
        return self._redis.get(key)

    @_unavailable_on_redis_errors
    def ping(self) -> None:
        self._redis.ping()
