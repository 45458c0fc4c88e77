"""Many small Redis commands in one server call: a pipeline that runs as a Lua script.

A redis-py pipeline still packs, sends, parses and awaits every command on its own, which costs
tens of microseconds of Python per command: at three or four commands per event that was a
third of the worker's time. ``CommandBatch`` queues the same commands (same method names and
replies as a pipeline for the ones used here) and ``execute`` sends them as **one** ``EVALSHA``
per group: the script runs each command with ``redis.call`` and returns all replies in one
array, parsed by hiredis in C.

Groups: on a standalone server any commands may share a call (up to ``max_commands``); on Redis
Cluster a script may only touch one slot, so commands are grouped by their key's slot (keys are
hash-tagged per customer, item or category, so a customer's commands still share a call).
Every key a command touches is passed in ``KEYS``, as scripts must.

Arguments travel as JSON strings, so values must be text (floats are sent with ``repr``, which
round-trips exactly). A failing command aborts the rest of its group's script (as a
``ResponseError`` from ``execute``); the commands used here only fail on a wrong key type.

>>> batch = CommandBatch(client=None)
>>> batch.zadd("k", {"a": 1.5}, gt=True)
0
>>> batch.pexpire("k", 1000)
1
>>> len(batch)
2
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson
from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from features.commands import pipeline

__all__ = ["CommandBatch", "as_text", "packed"]

# KEYS holds the distinct keys; ARGV[1] the commands as JSON [name, key index, args...].
# ZMERGE is ours: ZMERGE key INCR|GT keep ttl_ms score member [score member ...] adds (INCR)
# or raises to (GT) each member's score, keeps the ``keep`` highest and sets the TTL.
_SCRIPT: Final = """
local function zmerge(key, c)
  if c[3] == 'INCR' then
    for j = 6, #c, 2 do redis.call('ZINCRBY', key, c[j], c[j + 1]) end
  else
    for j = 6, #c, 2 do redis.call('ZADD', key, 'GT', c[j], c[j + 1]) end
  end
  redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(c[4]) + 1))
  return redis.call('PEXPIRE', key, c[5])
end
local cmds = cjson.decode(ARGV[1])
local out = {}
for i = 1, #cmds do
  local c = cmds[i]
  c[2] = KEYS[c[2]]
  if c[1] == 'ZMERGE' then
    out[i] = zmerge(c[2], c)
  else
    out[i] = redis.call(unpack(c))
  end
end
return out
"""
_SHA: Final = hashlib.sha1(_SCRIPT.encode()).hexdigest()
_MAX_COMMANDS: Final = 2_000


def as_text(value: Any) -> str:
    """A command argument as the text Redis receives (floats exactly, via ``repr``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def packed(args: Sequence[Any]) -> bytes:
    """Script arguments as one JSON array of strings, for scripts that start with
    ``local ARGV = cjson.decode(ARGV[1])``: redis-py spends microseconds of Python on each
    argument it encodes, orjson a fraction of one.

    >>> packed(["c1", 0.1, 3, b"x"])
    b'["c1","0.1","3","x"]'
    """
    return orjson.dumps([as_text(a) for a in args])


def _pairs(flat: list[Any]) -> list[tuple[bytes, float]]:
    return [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]


def _hash(flat: list[Any]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


class CommandBatch:
    """Queue commands like a pipeline; ``await execute()`` runs them in one call per group.

    Parameters
    ----------
    client
        A started ``redis.asyncio`` client or cluster client (not closed here).
    max_commands
        Commands per script call on a standalone server (bounds how long one call blocks it).
    """

    def __init__(
        self, client: Redis | RedisCluster | None, max_commands: int = _MAX_COMMANDS
    ) -> None:
        self.client = client
        self.max_commands = max_commands
        self._commands: list[tuple[str, list[str]]] = []  # (key, [name, *args])
        self._post: list[Any] = []

    def __len__(self) -> int:
        return len(self._commands)

    def execute_command(self, name: str, key: str, *args: Any, post: Any = None) -> int:
        """Queue ``name key *args``; returns its index in ``execute()``'s replies."""
        self._commands.append((key, [name, *map(as_text, args)]))
        self._post.append(post)
        return len(self._commands) - 1

    # -- the pipeline methods the stores use (same replies as redis-py's) -----------------

    def zadd(self, key: str, mapping: Mapping[str, float], *, gt: bool = False) -> int:
        args: list[Any] = ["GT"] if gt else []
        for member, score in mapping.items():
            args += (score, member)
        return self.execute_command("ZADD", key, *args)

    def zmerge(
        self, key: str, mapping: Mapping[str, float], *, incr: bool, keep: int, ttl_ms: int
    ) -> int:
        """Add to (``incr``) or raise to (GT) members' scores, keep the ``keep`` highest and
        set the TTL: three or more commands in one (``ZMERGE``); replies 1 (0: key gone)."""
        args = ["ZMERGE", "INCR" if incr else "GT", str(keep), str(ttl_ms)]
        for member, score in mapping.items():
            args += (repr(score), member)
        self._commands.append((key, args))
        self._post.append(None)
        return len(self._commands) - 1

    def zincrby(self, key: str, amount: float, member: str) -> int:
        return self.execute_command("ZINCRBY", key, amount, member, post=float)

    def zrange(self, key: str, start: int, end: int, *, withscores: bool = False) -> int:
        if withscores:
            return self.execute_command("ZRANGE", key, start, end, "WITHSCORES", post=_pairs)
        return self.execute_command("ZRANGE", key, start, end)

    def zrevrange(self, key: str, start: int, end: int, *, withscores: bool = False) -> int:
        if withscores:
            return self.execute_command("ZRANGE", key, start, end, "REV", "WITHSCORES", post=_pairs)
        return self.execute_command("ZRANGE", key, start, end, "REV")

    def zremrangebyrank(self, key: str, start: int, end: int) -> int:
        return self.execute_command("ZREMRANGEBYRANK", key, start, end)

    def pexpire(self, key: str, ms: int) -> int:
        return self.execute_command("PEXPIRE", key, ms, post=bool)

    def hgetall(self, key: str) -> int:
        return self.execute_command("HGETALL", key, post=_hash)

    def hget(self, key: str, field: str) -> int:
        return self.execute_command("HGET", key, field)

    def exists(self, key: str) -> int:
        return self.execute_command("EXISTS", key)

    def lrange(self, key: str, start: int, end: int) -> int:
        return self.execute_command("LRANGE", key, start, end)

    def rpush(self, key: str, *values: Any) -> int:
        return self.execute_command("RPUSH", key, *values)

    def ltrim(self, key: str, start: int, end: int) -> int:
        return self.execute_command("LTRIM", key, start, end, post=bool)

    # -- running ------------------------------------------------------------------------

    async def execute(self) -> list[Any]:
        """Run the queued commands; their replies in queue order. The batch keeps them, so a
        caller's retry may run it again."""
        commands, post = self._commands, self._post
        if not commands:
            return []
        client = self.client
        if client is None:
            raise RuntimeError("CommandBatch has no client")
        groups = self._groups(commands, isinstance(client, RedisCluster))
        calls = [self._call(commands, g) for g in groups]
        try:
            replies = await _run(client, calls)
        except rex.NoScriptError:
            # a restart, failover or SCRIPT FLUSH emptied the script cache
            await client.script_load(_SCRIPT)
            replies = await _run(client, calls)
        out: list[Any] = [None] * len(commands)
        for group, reply in zip(groups, replies, strict=True):
            for i, value in zip(group, reply, strict=True):
                fn = post[i]
                out[i] = fn(value) if fn is not None and value is not None else value
        return out

    def _groups(self, commands: list[tuple[str, list[str]]], cluster: bool) -> list[list[int]]:
        if not cluster:
            n, step = len(commands), self.max_commands
            return [list(range(i, min(i + step, n))) for i in range(0, n, step)]
        by_slot: dict[int, list[int]] = {}
        for i, (key, _) in enumerate(commands):
            by_slot.setdefault(key_slot(key.encode()), []).append(i)
        return list(by_slot.values())

    @staticmethod
    def _call(commands: list[tuple[str, list[str]]], group: list[int]) -> tuple[list[str], bytes]:
        index: dict[str, int] = {}
        body: list[list[Any]] = []
        for i in group:
            key, cmd = commands[i]
            k = index.get(key)
            if k is None:
                k = index[key] = len(index) + 1
            body.append([cmd[0], k, *cmd[1:]])
        return list(index), orjson.dumps(body)


async def _run(client: Redis | RedisCluster, calls: list[tuple[list[str], bytes]]) -> list[Any]:
    # always a pipeline, even of one call: on one server the stores' calls of one event-loop
    # turn then share a round trip (``features.commands.coalesce``)
    pipe = pipeline(client)
    for keys, body in calls:
        pipe.evalsha(_SHA, len(keys), *keys, body)
    return list(await pipe.execute())
