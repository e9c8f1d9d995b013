"""The Redis idempotency store: for apps that mount the pipeline without a database.

What it guarantees, while Redis is up and answering:

- **Exactly one execution per key across processes.** The claim is one Lua
  script (claim-if-absent-or-expired, else return the record to judge; expired
  means past its TTL with no live lease, as in every store), so two
  processes can never both claim a key; every other outcome is decided by the
  same :func:`~retrysafe.idempotency.decisions.judge` the other stores use.
- **Fencing.** Each claim carries a fresh token; ``checkpoint``, ``complete``
  and ``abandon`` are Lua scripts that write only while the record still holds
  that token. A holder that was merely slow, whose lease expired and whose
  record was taken over, gets :class:`LeaseLost` instead of overwriting the
  new holder's record. ``complete`` is idempotent for its own token (the
  client's automatic retry after a lost reply must not turn success into 409).
- **Crash safety by lease.** A claim is held by a lease from the start (there
  is no transaction that a crash would roll back); a retry after the lease
  ran out takes the record over and resumes from its last recovery point.
  Leaving the attempt without ``complete`` mirrors the SQL store: before a
  checkpoint the claim is undone (as a rollback would), after one the record
  stays held until its lease runs out (as a crash would).

What it does **not** guarantee: the handler's own database writes are *not*
atomic with the record. There is no transaction shared by Redis and a
database, so a crash between a handler's commit and ``complete`` leaves the
effect without its record, and the retry (after the lease) runs again. Use the
SQL store when the handler writes to a database; use this one for handlers
whose effects are idempotent themselves or keyed by the record's
``external_key``. Redis must not evict these keys (``maxmemory-policy
noeviction`` or ``volatile-*`` with room to spare) and should persist (AOF) if
records must survive a Redis restart: a record Redis loses is a key that is new
again.

Expiry: every key carries a Redis TTL covering its record's expiry and lease,
so Redis deletes records itself. Expiry is also judged against the caller's
clock (``now``), as in the other stores; ``purge_expired`` deletes the records
that clock says are expired before Redis's own TTL removes them (rarely any).

Unreachable Redis raises :class:`StoreUnavailable`: the pipeline answers 503
and nothing was recorded. Timeouts are short and retries few on purpose: a
request should learn quickly that the store is down, not wait seconds for it.

The per-request scripts (claim, take-over, checkpoint, complete, abandon) run
on one pipelined connection per store
(:mod:`~retrysafe.stores.pipelined_redis`), built from the client's own
settings: a fraction of redis-py's CPU per command. A client that connection
cannot stand in for exactly (TLS, a cluster or Sentinel client, another
connection class, ``decode_responses=True``, a retry on more than its default errors; see
:meth:`~retrysafe.stores.pipelined_redis.PipelineSettings.from_client`) runs
them through redis-py as before. ``purge_expired`` always uses redis-py.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from retrysafe.idempotency.decisions import (
    Decision,
    Execute,
    InFlight,
    LeaseLost,
    Resumption,
    TakeOver,
    judge,
)
from retrysafe.idempotency.records import (
    IdempotencyRecord,
    RecordKey,
    RecordStatus,
    StoredResponse,
)
from retrysafe.stores.pipelined_redis import PipelinedRedis, PipelineSettings
from retrysafe.unavailable import StoreUnavailable
from retrysafe.unique import random_hex

__all__ = ["DEFAULT_PREFIX", "RedisIdempotencyStore"]

DEFAULT_PREFIX = "retrysafe:idem:"

CONNECT_TIMEOUT = 0.5
"""Seconds to open a connection; loopback or LAN Redis connects in well under a millisecond."""

COMMAND_TIMEOUT = 2.0
"""Seconds one command (a short Lua script) may take before the store counts as down."""

SUBJECT = "idempotency store (redis)"
"""What the 503 of an unreachable Redis tells the client: this store, not a database."""

_TAKE_OVER_ATTEMPTS = 3

# Claim the key when it is free or logically expired (past its TTL and no lease
# lives: a holder still working keeps its key); otherwise return the record so
# Python can judge it. ARGV: now, fingerprint, expires_at, locked_until, token,
# ttl in ms. Times travel as Python float reprs and are only compared
# here, never computed, so no precision is lost in Lua's number formatting.
# The record comes back as one string, each name and value framed as "length:bytes"
# (see _unframed): every replay reads it, and redis-py's own parser pays per element
# of a reply (a record's 30-element HGETALL cost 137 µs of CPU, one string 37 µs).
_CLAIM = """
local now = tonumber(ARGV[1])
local held = redis.call('HMGET', KEYS[1], 'expires_at', 'locked_until')
if held[1] and (tonumber(held[1]) > now or (held[2] and tonumber(held[2]) > now)) then
  local record = redis.call('HGETALL', KEYS[1])
  for i = 1, #record do
    record[i] = #record[i] .. ':' .. record[i]
  end
  return {'existing', table.concat(record)}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[2], 'status', 'in_progress',
  'expires_at', ARGV[3], 'locked_until', ARGV[4], 'lock_token', ARGV[5],
  'created_at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {'claimed'}
"""

# Take over an in-progress record whose lease expired, but only if nobody else
# did since we read it (compare-and-set on the token and lease we judged).
# ARGV: stale token ('' if none), stale locked_until, new token, new locked_until,
# lease in ms.
_TAKE_OVER = """
local current = redis.call('HMGET', KEYS[1], 'status', 'lock_token', 'locked_until')
if current[1] ~= 'in_progress' or (current[2] or '') ~= ARGV[1] or current[3] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'lock_token', ARGV[3], 'locked_until', ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[5]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return 1
"""

# The fence: write only while the record still carries our token. ARGV: token,
# minimum TTL in ms to keep ('0' for none), the earliest expires_at to keep (''
# for no change: a checkpoint passes its new locked_until, so expiry never falls
# before the lease), number of fields to delete, those fields, then field/value
# pairs to set.
_FENCED_UPDATE = """
if redis.call('HGET', KEYS[1], 'lock_token') ~= ARGV[1] then
  return 0
end
if ARGV[3] ~= '' and tonumber(redis.call('HGET', KEYS[1], 'expires_at')) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'expires_at', ARGV[3])
end
local deleted = tonumber(ARGV[4])
for i = 5, 4 + deleted do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
if #ARGV > 4 + deleted then
  redis.call('HSET', KEYS[1], unpack(ARGV, 5 + deleted))
end
local keep = tonumber(ARGV[2])
if keep > 0 and redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
end
return 1
"""

# Record the answer while the record still carries our token, and remember whose
# answer it is: run again with the same token (redis-py retrying a command whose
# reply was lost), it finds the record complete with this very answer and succeeds
# without writing. Any other token, or another answer, is fenced off.
# ARGV: token, status, body, then '1' and the value or '0' and '' for the
# Content-Type and for the Location.
_COMPLETE = """
local current = redis.call('HMGET', KEYS[1], 'lock_token', 'completed_by', 'response_status',
  'response_body', 'response_content_type', 'response_location')
if current[1] == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'lock_token', 'locked_until')
  redis.call('HSET', KEYS[1], 'status', 'completed', 'completed_by', ARGV[1],
    'response_status', ARGV[2], 'response_body', ARGV[3])
  if ARGV[4] == '1' then
    redis.call('HSET', KEYS[1], 'response_content_type', ARGV[5])
  end
  if ARGV[6] == '1' then
    redis.call('HSET', KEYS[1], 'response_location', ARGV[7])
  end
  return 1
end
local function same(stored, present, value)
  if present == '1' then
    return stored == value
  end
  return stored == false
end
if current[2] == ARGV[1] and current[3] == ARGV[2] and current[4] == ARGV[3]
    and same(current[5], ARGV[4], ARGV[5]) and same(current[6], ARGV[6], ARGV[7]) then
  return 1
end
return 0
"""

# Let go of a claim: 'delete' frees the key (a fresh claim nobody checkpointed);
# 'release' keeps the record, its recovery point and created_at (so its external
# key) and ends the lease (locked_until 0 is always past), so the next retry takes
# it over at once. Removing the token keeps every earlier holder fenced off.
# ARGV: token, 'delete' or 'release'.
_ABANDON = """
if redis.call('HGET', KEYS[1], 'lock_token') ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'delete' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HDEL', KEYS[1], 'lock_token')
  redis.call('HSET', KEYS[1], 'locked_until', '0')
end
return 1
"""

# Purge one record if the caller's clock says it expired and no lease holds it.
# ARGV: now.
_PURGE = """
local fields = redis.call('HMGET', KEYS[1], 'expires_at', 'locked_until')
if not fields[1] or tonumber(fields[1]) > tonumber(ARGV[1]) then
  return 0
end
if fields[2] and tonumber(fields[2]) > tonumber(ARGV[1]) then
  return 0
end
return redis.call('DEL', KEYS[1])
"""


def _ms(seconds: float) -> str:
    return str(max(1, math.ceil(seconds * 1000)))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


class RedisIdempotencyStore:
    """Idempotency records as Redis hashes, one per organization and key.

    Keys are ``{prefix}{organization_id}:{sha256(key)}``: the organization stays
    readable for operators, and hashing the client's key (which may contain
    ``:``) keeps two (organization, key) pairs from ever sharing a Redis key.
    """

    def __init__(
        self,
        client: Redis,
        *,
        lease_seconds: float = 60.0,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self._redis = client
        self._lease = lease_seconds
        self.prefix = prefix
        self._claim = client.register_script(_CLAIM)
        self._take_over = client.register_script(_TAKE_OVER)
        self._fenced_update = client.register_script(_FENCED_UPDATE)
        self._complete = client.register_script(_COMPLETE)
        self._abandon = client.register_script(_ABANDON)
        self._purge = client.register_script(_PURGE)
        settings = PipelineSettings.from_client(client)
        self._pipeline = None if settings is None else PipelinedRedis(settings)

    @property
    def pipelined(self) -> bool:
        """Whether the per-request scripts run on the store's pipelined connection."""
        return self._pipeline is not None

    @classmethod
    def from_url(
        cls, url: str, *, lease_seconds: float = 60.0, prefix: str = DEFAULT_PREFIX
    ) -> RedisIdempotencyStore:
        """A store on a new client for ``url`` (``redis://host:6379/0``), with short timeouts.

        One immediate retry covers a pooled connection that Redis closed (a
        restart); more would only delay the 503 while Redis is really down.
        """
        client = Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client, lease_seconds=lease_seconds, prefix=prefix)

    async def aclose(self) -> None:
        """Close the pipelined connection and the client's own connections."""
        try:
            if self._pipeline is not None:
                await self._pipeline.aclose()
        finally:
            await self._redis.aclose()

    def redis_key(self, key: RecordKey) -> str:
        digest = hashlib.sha256(key.key.encode()).hexdigest()
        return f"{self.prefix}{key.organization_id}:{digest}"

    @contextlib.asynccontextmanager
    async def attempt(
        self, key: RecordKey, fingerprint: str, *, now: float, ttl: float
    ) -> AsyncIterator[Decision]:
        decision = await self._decide(key, fingerprint, now, ttl)
        if not isinstance(decision, Execute):
            yield decision
            return
        attempt = cast(_RedisAttempt, decision.attempt)
        try:
            yield decision
        except BaseException:
            if not attempt.settled and not attempt.checkpointed:
                # The request failed; its exception matters more than a failed
                # undo. An undone claim frees itself anyway when its lease ends.
                with contextlib.suppress(StoreUnavailable):
                    await attempt.abandon()
            raise
        if not attempt.settled and not attempt.checkpointed:
            await attempt.abandon()

    async def _decide(self, key: RecordKey, fingerprint: str, now: float, ttl: float) -> Decision:
        redis_key = self.redis_key(key)
        token = random_hex(16)
        for _ in range(_TAKE_OVER_ATTEMPTS):
            reply = await self._run(
                self._claim,
                [redis_key],
                [
                    repr(now),
                    fingerprint,
                    repr(now + ttl),
                    repr(now + self._lease),
                    token,
                    _ms(max(ttl, self._lease)),
                ],
            )
            if reply[0] == b"claimed":
                # Where it resumes is worked out only if the handler asks (a hash).
                return self._execute(
                    redis_key, token, partial(Resumption.fresh, key, now), fresh=True
                )
            fields = _unframed(reply[1])
            record = _record(key, fields)
            if record.lock_token == token:
                # Our own claim, applied by a command whose reply was lost and that
                # the client retried: it is ours, not someone else's in flight.
                fresh = record.created_at == now
                return self._execute(redis_key, token, Resumption.of(record), fresh=fresh)
            verdict = judge(record, fingerprint, now)
            if not isinstance(verdict, TakeOver):
                return verdict
            stale = verdict.stale
            taken = await self._run(
                self._take_over,
                [redis_key],
                [
                    stale.lock_token or "",
                    # Compared as the stored text, exactly as read.
                    _text(fields.get(b"locked_until")) or "",
                    token,
                    repr(now + self._lease),
                    _ms(self._lease),
                ],
            )
            if taken == 1:
                return self._execute(redis_key, token, Resumption.of(stale), fresh=False)
            # Someone else took it over or finished it between our read and our
            # compare-and-set: judge the record as it is now.
        return InFlight(retry_after=1)

    def _execute(
        self,
        redis_key: str,
        token: str,
        resumption: Resumption | Callable[[], Resumption],
        *,
        fresh: bool,
    ) -> Execute:
        return Execute(_RedisAttempt(self, redis_key, token, resumption, fresh=fresh))

    async def purge_expired(self, now: float) -> int:
        """Delete records whose expiry (by ``now``) passed and whose lease is over.

        Redis expires keys itself, so this usually finds nothing; it walks the
        store's keys with ``SCAN`` (never ``KEYS``) in batches.
        """
        purged = 0
        batch: list[bytes] = []
        try:
            async for redis_key in self._redis.scan_iter(match=self.prefix + "*", count=500):
                batch.append(redis_key)
                if len(batch) >= 500:
                    purged += await self._purge_batch(batch, now)
                    batch = []
            if batch:
                purged += await self._purge_batch(batch, now)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis: {exc}", dependency="redis", subject=SUBJECT) from exc
        return purged

    async def _purge_batch(self, keys: Sequence[bytes], now: float) -> int:
        # One script per key, pipelined: one round trip per batch, and no script
        # touches two keys (those may live on different Redis Cluster nodes).
        async with self._redis.pipeline(transaction=False) as pipe:
            for redis_key in keys:
                await self._purge(keys=[redis_key], args=[repr(now)], client=pipe)
            results = await pipe.execute()
        return sum(int(result) for result in results)

    async def _run(self, script: AsyncScript, keys: list[str], args: Sequence[str | bytes]) -> Any:
        """Run ``script``; every Redis failure becomes :class:`StoreUnavailable` (503).

        The pipelined connection raises redis-py's own errors, so both paths end here alike.
        """
        try:
            if self._pipeline is not None:
                source = cast(str, script.script)  # registered from this module's str constants
                return await self._pipeline.run_script(script.sha, source, keys, args)
            return await cast(Awaitable[Any], script(keys=keys, args=args))
        except RedisError as exc:
            raise StoreUnavailable(f"Redis: {exc}", dependency="redis", subject=SUBJECT) from exc


class _RedisAttempt:
    def __init__(
        self,
        store: RedisIdempotencyStore,
        redis_key: str,
        token: str,
        resumption: Resumption | Callable[[], Resumption],
        *,
        fresh: bool,
    ) -> None:
        self._store = store
        self._key = redis_key
        self._token = token
        self._resumption = resumption
        self._fresh = fresh
        """A new record, not one taken over: undoing the claim deletes it."""
        self.settled = False
        self.checkpointed = False

    @property
    def resumption(self) -> Resumption:
        resumption = self._resumption
        if not isinstance(resumption, Resumption):
            resumption = self._resumption = resumption()
        return resumption

    async def checkpoint(self, point: str, data: str | None, *, now: float) -> None:
        lease = self._store._lease
        locked_until = repr(now + lease)
        pairs = ["recovery_point", point, "locked_until", locked_until]
        deleted = []
        if data is None:
            deleted.append("recovery_data")
        else:
            pairs += ["recovery_data", data]
        await self._fenced(deleted, pairs, keep_ms=_ms(lease), expires_at_least=locked_until)
        self.checkpointed = True
        self._resumption = Resumption(point, data, self.resumption.external_key)

    async def complete(self, response: StoredResponse) -> None:
        """Record ``response``; idempotent for this holder (same token, same answer)."""
        self.settled = True
        args: list[str | bytes] = [self._token, str(response.status), response.body]
        for optional in (response.content_type, response.location):
            args += ["0", ""] if optional is None else ["1", optional]
        if await self._store._run(self._store._complete, [self._key], args) != 1:
            raise LeaseLost("another request took this idempotency record over")

    async def abandon(self) -> None:
        self.settled = True
        # A taken-over record keeps its created_at (so its external key: the crashed
        # holder may have used it upstream) even when nobody checkpointed since.
        how = "delete" if self._fresh and not self.checkpointed else "release"
        await self._store._run(self._store._abandon, [self._key], [self._token, how])

    async def _fenced(
        self,
        deleted: list[str],
        pairs: Sequence[str | bytes],
        *,
        keep_ms: str,
        expires_at_least: str = "",
    ) -> None:
        args: list[Any] = [
            self._token,
            keep_ms,
            expires_at_least,
            str(len(deleted)),
            *deleted,
            *pairs,
        ]
        if await self._store._run(self._store._fenced_update, [self._key], args) != 1:
            raise LeaseLost("another request took this idempotency record over")


def _unframed(framed: bytes) -> dict[bytes, bytes]:
    """A hash's fields from the claim script's one string: "length:bytes" per name and value."""
    flat = []
    at = 0
    while at < len(framed):
        colon = framed.index(b":", at)
        end = colon + 1 + int(framed[at:colon])
        flat.append(framed[colon + 1 : end])
        at = end
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _record(key: RecordKey, fields: Mapping[bytes, bytes]) -> IdempotencyRecord:
    response = None
    if b"response_status" in fields:
        response = StoredResponse(
            status=int(fields[b"response_status"]),
            body=fields.get(b"response_body", b""),
            content_type=_text(fields.get(b"response_content_type")),
            location=_text(fields.get(b"response_location")),
        )
    locked_until = fields.get(b"locked_until")
    return IdempotencyRecord(
        key=key,
        fingerprint=fields[b"fingerprint"].decode(),
        status=RecordStatus(fields[b"status"].decode()),
        expires_at=float(fields[b"expires_at"]),
        response=response,
        locked_until=None if locked_until is None else float(locked_until),
        lock_token=_text(fields.get(b"lock_token")),
        recovery_point=_text(fields.get(b"recovery_point")),
        recovery_data=_text(fields.get(b"recovery_data")),
        created_at=float(fields.get(b"created_at", b"0")),
    )
