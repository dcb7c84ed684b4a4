"""The Redis online store: feature records on a ketama ring of standalone Redis nodes, or on a Redis
Cluster, with grouped bulk reads and writes and a live rebalance of the ring that loses no key.

The format of keys and values is in `featurelake.feature_records` and docs/online-store.md. Writes
keep the newer record: a Lua script compares feature dates on the server, so a backfill of an old
date never overwrites a newer one, and a rerun of the same date writes the same bytes.

Rebalancing a ring (nodes added or removed) is live:
1. Point every client at the new `nodes`, with the old ones as `previous_nodes`. Writes then go to
   the new owners, unless the previous owner still holds a later record; a read of a moving key
   asks both owners, and the later feature date wins.
2. `rebalance()` scans every node (SCAN, never KEYS) and moves each key that the new ring places
   elsewhere: copy to the new owner (remaining TTL kept) unless it already holds a record of the
   same or a later feature date, which a writer on the new ring put there; then delete from the
   old node only if it still holds the copied bytes. If it holds other bytes (a writer on the old
   ring changed it: the next pass moves the change) or none (the key expired or was deleted), the
   copy is deleted from the new owner if that still holds it. A crash, or a lost reply of the copy
   or the delete (sent once: a resent script would answer for the first run's work), leaves each key
   on one node or on both with the same bytes, and a rerun finishes the move: the pass is idempotent.
3. When a pass moves nothing, drop `previous_nodes`.
One pass runs at a time: a pass holds a lock on every node it scans (`featurelake.rebalance_lock`).
Publishing a date (`replace_date`) writes its records, then removes that date's records of entities
the date no longer holds (a rerun with corrected data): SCAN of key names, and a compare-and-delete
script of the few candidates, so that a record of a later date is never removed.
A Redis Cluster moves its own slots (`redis-cli --cluster reshard` or `rebalance`); this store reads
and writes it meanwhile, following the cluster's ASK and MOVED redirections.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, ClusterDownError, ClusterError, MovedError, TryAgainError
from redis.retry import Retry

from featurelake.feature_records import (
    FeatureRecord,
    decode_record,
    encode_record,
    entity_keys,
    feature_key,
    iso_feature_date,
    key_pattern,
    refuse_one_id,
    text_id,
)
from featurelake.network_address import is_ipv6_address
from featurelake.rebalance_lock import RebalanceLock
from featurelake.sharding import ShardRing

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "fl"
DEFAULT_KEY_TTL_SECONDS = 2 * 24 * 3600
DEFAULT_BATCH_SIZE = 1000
# A command waits this long for its answer, and a connection this long to open (seconds).
DEFAULT_SOCKET_TIMEOUT = 10.0
DEFAULT_SOCKET_CONNECT_TIMEOUT = 5.0
# redis-py's own defaults (redis._defaults): a command whose connection fails or times out is tried
# again up to 10 times, waiting a random time up to 10 ms * 2**attempt, at most 1 s, in between.
DEFAULT_RETRIES = 10
DEFAULT_RETRY_BACKOFF_CAP = 1.0
_RETRY_BACKOFF_BASE = 0.01

# A Redis Cluster's replies for a key whose slot is moving (ASK) or has moved (MOVED), or from a
# node that does not serve the slot for a moment (CLUSTERDOWN: a failover it has not learned of
# yet); redis-py's cluster client follows the first two, and waits out the third.
_SLOT_REDIRECTIONS = (AskError, MovedError, ClusterDownError)

# The write script's first argument: replace a record of the same feature date, or keep it.
_REPLACE_SAME_DATE = "1"
_KEEP_SAME_DATE = "0"

# Lua: `held_value(key)`, the string `key` holds (false when there is none), and
# `record_date(key, value)`, the feature date of the record `value` held by `key` (element 2 of the
# msgpack array). Each answers an error reply naming the key when it holds something else (another
# program's value under the prefix: another string, or a hash, list or set, of which GET would
# answer WRONGTYPE), rather than an error that names neither the key nor what to do.
_RECORD_DATE = """
local function not_a_record(key)
  error({err = 'featurelake: key ' .. key .. ' holds no featurelake record (a string of a msgpack ' ..
    'array [version, date, map]): delete it if nothing else needs it, or give featurelake its own key_prefix'})
end
local function held_value(key)
  local value = redis.pcall('GET', key)
  if type(value) == 'table' and value.err then
    not_a_record(key)
  end
  return value
end
local function one_value(ok, ...)
  if ok and select('#', ...) == 1 then
    return (...)
  end
end
-- One msgpack array [version, 'YYYY-MM-DD', map], and nothing after it. Before, a date such as
-- 'garbage' sorted after every later date and kept out every write. decode_record also checks the
-- map's names and values; a loop over them here cost the daily write 10-20% (docs/benchmarks.md).
local function record_date(key, value)
  local record = one_value(pcall(cmsgpack.unpack, value))
  if type(record) == 'table' and record[4] == nil and type(record[3]) == 'table'
      and type(record[2]) == 'string' and string.match(record[2], '^%d%d%d%d%-%d%d%-%d%d$') then
    return record[2]
  end
  not_a_record(key)
end
"""

# KEYS: feature keys. ARGV[1]: '1' to replace a record of the same feature date (a write: a rerun
# or a correction of that date), '0' to keep it (a rebalance's copy: a record of the same date already
# on the new owner was written after the switch to the new ring, so it is the current one).
# ARGV[2..]: value_1, ttl_ms_1, value_2, ttl_ms_2, ... (ttl 0: no expiry).
# Sets each key unless it holds a record with a later feature date (element 2 of the msgpack array).
# Returns the keys set, so that a rebalance takes back only the copies it wrote (never a record the
# owner held already), and the layered cache only the records it wrote back.
_WRITE_IF_NOT_OLDER = (
    _RECORD_DATE
    + """
local replace_same_date = ARGV[1] == '1'
local set_keys = {}
for i, key in ipairs(KEYS) do
  local value = ARGV[2 * i]
  local ttl = ARGV[2 * i + 1]
  local current = held_value(key)
  local set = not current
  if current then
    local held = record_date(key, current)
    local given = record_date(key, value)
    set = held < given or (replace_same_date and held == given)
  end
  if set then
    if ttl == '0' then
      redis.call('SET', key, value)
    else
      redis.call('SET', key, value, 'PX', ttl)
    end
    set_keys[#set_keys + 1] = key
  end
end
return set_keys
"""
)

# KEYS: keys. ARGV: the value each must still hold. Deletes those that do; returns {deleted, gone,
# changed}: how many keys were deleted, the keys no longer there (expired or deleted since they
# were read), and the keys that hold another value.
_DELETE_IF_UNCHANGED = """
local deleted = 0
local gone = {}
local changed = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if not current then
    gone[#gone + 1] = key
  elseif current == ARGV[i] then
    deleted = deleted + redis.call('DEL', key)
  else
    changed[#changed + 1] = key
  end
end
return {deleted, gone, changed}
"""


# KEYS: feature keys. ARGV[1]: an ISO feature date. ARGV[2]: '<=' to delete records of that date
# or an earlier one (an older record on a key's previous node during a rebalance), else only those
# of that date. Deletes each key that holds such a record (element 2 of the msgpack array), and
# leaves a record of any other date; returns the keys deleted. Run per key on the server, so a
# record a writer replaced meanwhile is never deleted.
_DELETE_IF_DATED = (
    _RECORD_DATE
    + """
local deleted = {}
for _, key in ipairs(KEYS) do
  local current = held_value(key)
  local held = current and record_date(key, current)
  if held and (held == ARGV[1] or (ARGV[2] == '<=' and held < ARGV[1])) then
    redis.call('DEL', key)
    deleted[#deleted + 1] = key
  end
end
return deleted
"""
)


# KEYS: one key. Deletes it; returns 1 if it was there (a script, so that it goes the way of the
# cluster's other per-key scripts).
_DELETE_KEY = "return redis.call('DEL', KEYS[1])"


def _host_port(node: str) -> tuple[str, int]:
    """The host and port of `node`, host:port; an IPv6 address may be bracketed, as in URLs
    (`[fd00::5]:6379`), or not (`fd00::5:6379`: the last `:` starts the port)."""
    host, sep, port = node.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # the resolver takes the address without its brackets
    elif ":" in host and not is_ipv6_address(host):
        # `::1` or `fd00::5` with no port: read as host `:` port 1, or `fd00:` port 5
        raise ValueError(
            f"online store node {node!r} is an IPv6 address without its port, or not host:port; "
            f"write the address in brackets with its port, for example [{node.strip('[]')}]:6379"
        )
    if not sep or not host or not port.isdigit():
        raise ValueError(f"online store node {node!r} must be host:port, for example redis-0:6379")
    return host, int(port)


def _with_default_port(entry: str) -> str | None:
    """A `startup_nodes` entry as host:port, with Redis's port 6379 when it names none; None when
    it is an IPv6 address without brackets, whose last group could be a port or not (`fd00::2` is
    not host `fd00:` and port 2)."""
    if entry.startswith("["):
        if "]" not in entry:
            return None
        return entry if "]:" in entry else f"{entry}:6379"
    if entry.count(":") > 1:
        return None
    return entry if ":" in entry else f"{entry}:6379"


def _is_node(entry: object) -> bool:
    """Whether a `nodes` entry is a host:port string, as the store reads them."""
    if not isinstance(entry, str):
        return False
    try:
        _host_port(entry)
    except ValueError:
        return False
    return True


# redis-py's names of the TLS verify modes, which the Airflow Redis form offers too.
_SSL_CERT_REQS = ("required", "optional", "none")

_CONNECTION_EXTRAS = frozenset(
    {
        "nodes",
        "previous_nodes",
        "cluster",
        "db",
        "ssl",
        "key_prefix",
        "key_ttl_seconds",
        "batch_size",
        "socket_timeout",
        "socket_connect_timeout",
        "retries",
        "retry_backoff_cap",
        # the Airflow Redis connection form's own fields
        "startup_nodes",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_check_hostname",
    }
)


def _flag_extra(extra: Mapping[str, Any], name: str, conn_id: str) -> bool:
    """A true/false extra: a JSON boolean, or the strings "true"/"false" (a connection's extras
    are often typed as text, and bool("false") is True)."""
    value = extra.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"connection {conn_id!r}: extra `{name}` must be true or false, got {value!r}")


def _int_extra(extra: Mapping[str, Any], name: str, default: int, conn_id: str) -> int:
    """A whole-number extra: a JSON integer, or a string of digits."""
    value = extra.get(name, default)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"connection {conn_id!r}: extra `{name}` must be a whole number, got {value!r}")


def _seconds_extra(extra: Mapping[str, Any], name: str, default: float, conn_id: str) -> float:
    """A number of seconds: a JSON number, or a string of one (0.25, "0.25")."""
    value = extra.get(name, default)
    if not isinstance(value, bool):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            pass
        else:
            if math.isfinite(seconds):
                return seconds
    raise ValueError(f"connection {conn_id!r}: extra `{name}` must be a number of seconds, got {value!r}")


@dataclass(frozen=True)
class OnlineStoreConfig:
    """Where the online store lives and how it writes."""

    # host:port of every ring node; with `cluster`, the cluster's startup nodes.
    nodes: tuple[str, ...]
    # During a ring rebalance: the nodes keys were placed on before (see the module docstring).
    previous_nodes: tuple[str, ...] = ()
    # True for a Redis Cluster: the cluster places keys by slot, and there is no ring.
    cluster: bool = False
    # The database number on every ring node (a Redis Cluster has only database 0).
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    # With `ssl`: redis-py's TLS options (None: redis-py's default).
    ssl_cert_reqs: str | None = None
    ssl_ca_certs: str | None = None
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_check_hostname: bool | None = None
    # First segment of every key, so several deployments can share the servers.
    key_prefix: str = DEFAULT_KEY_PREFIX
    # Lifetime of a written record; a user missing from later publishes expires after it. 0: never.
    key_ttl_seconds: int = DEFAULT_KEY_TTL_SECONDS
    # Keys per MGET, per write script call and per SCAN page.
    batch_size: int = DEFAULT_BATCH_SIZE
    # Seconds a command waits for its answer, and a new connection for the server (redis-py's
    # socket_timeout and socket_connect_timeout).
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT
    socket_connect_timeout: float = DEFAULT_SOCKET_CONNECT_TIMEOUT
    # Times a command is tried again when its connection fails or times out (0: never), with a
    # jittered exponential backoff of at most `retry_backoff_cap` seconds between tries. On a
    # Redis Cluster these tries are also how a command outlasts a failover: they reload the
    # cluster's slot table.
    retries: int = DEFAULT_RETRIES
    retry_backoff_cap: float = DEFAULT_RETRY_BACKOFF_CAP

    def __post_init__(self) -> None:
        for name in ("nodes", "previous_nodes"):
            given = getattr(self, name)
            # tuple() of a string is its characters (the error then named node 'r'), and of a map
            # its names, which dropped the weights silently
            if isinstance(given, (str, bytes)):
                raise TypeError(
                    f"{name} must be a list of host:port names, got the string {given!r}; pass [{given!r}]"
                )
            if isinstance(given, Mapping):
                raise TypeError(
                    f"{name} must be a list of host:port names, got a {type(given).__name__}; the ring "
                    "takes no weights (every node gets the same 160 points): list the nodes"
                )
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "previous_nodes", tuple(self.previous_nodes))
        if not self.nodes:
            raise ValueError("the online store needs at least one node (host:port)")
        for node in (*self.nodes, *self.previous_nodes):
            _host_port(node)
        if self.cluster and (self.previous_nodes or self.db):
            raise ValueError(
                "a Redis Cluster uses database 0 and rebalances its own slots: drop `db` and "
                "`previous_nodes` from the online store connection, or set `cluster` to false"
            )
        # Whole numbers: Redis refuses `PX 5400000.0` in every write's script, naming neither.
        for name in ("key_ttl_seconds", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be a whole number, got {value!r}; pass int({value!r})")
        if self.key_ttl_seconds < 0:
            raise ValueError(f"key_ttl_seconds must be >= 0 (0: no expiry), got {self.key_ttl_seconds}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("socket_timeout", "socket_connect_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {getattr(self, name)}")
        if self.retries < 0:
            raise ValueError(
                f"retries must be >= 0 (0: a failed command is not tried again), got {self.retries}"
            )
        if not self.retry_backoff_cap >= 0:
            raise ValueError(f"retry_backoff_cap must be >= 0 seconds, got {self.retry_backoff_cap}")
        feature_key(self.key_prefix, "view", "entity")  # validates the prefix

    @classmethod
    def from_connection(
        cls,
        *,
        host: str | None,
        port: int | None,
        login: str | None = None,
        password: str | None = None,
        extra: Mapping[str, Any] | None = None,
        conn_id: str = "featurelake_online",
    ) -> OnlineStoreConfig:
        """From an Airflow Redis connection's fields: one node at host:port, or the `nodes` extra
        (a list of host:port), or host:port plus the Redis connection form's `startup_nodes` (a
        comma-separated string of host:port: the cluster's other startup nodes, or the ring's other
        nodes). Other extras: `previous_nodes`, `cluster`, `db`, `ssl`, `key_prefix`,
        `key_ttl_seconds`, `batch_size`, `socket_timeout`, `socket_connect_timeout`, `retries`,
        `retry_backoff_cap`, and the form's TLS fields `ssl_cert_reqs`,
        `ssl_ca_certs`, `ssl_keyfile`, `ssl_certfile`, `ssl_check_hostname`. The form saves every
        one of its fields, so an empty value (null or "") means unset."""
        # The Airflow UI's Redis form saves all of its fields into the extra, the untouched ones too.
        extra = {name: value for name, value in (extra or {}).items() if value is not None and value != ""}
        unknown = sorted(set(extra) - _CONNECTION_EXTRAS)
        if unknown:
            raise ValueError(
                f"connection {conn_id!r}: unknown extra {unknown}; known: {sorted(_CONNECTION_EXTRAS)}"
            )
        # one ':' is a port (an IPv6 address has several): it would become host:port:6379
        if host and ("://" in host or "/" in host or host.count(":") == 1):
            raise ValueError(
                f"connection {conn_id!r}: its host {host!r} must be a host name or address alone; "
                "put the port in the port field, and TLS in the `ssl` extra"
            )
        cert_reqs = extra.get("ssl_cert_reqs")
        if cert_reqs is not None and cert_reqs not in _SSL_CERT_REQS:
            raise ValueError(
                f"connection {conn_id!r}: extra `ssl_cert_reqs` must be one of {', '.join(_SSL_CERT_REQS)}, "
                f"got {cert_reqs!r}"
            )
        startup = extra.get("startup_nodes", "")
        if not isinstance(startup, str):
            raise ValueError(
                f'connection {conn_id!r}: `startup_nodes` must be a string such as "r1:6379,r2:6379"'
            )
        more = [entry.strip() for entry in startup.split(",") if entry.strip()]
        if more and extra.get("nodes"):
            raise ValueError(
                f"connection {conn_id!r} sets both `nodes` and `startup_nodes`: list the nodes in one"
            )
        here = [f"{host}:{port or 6379}"] if host else []
        startup_nodes = [_with_default_port(entry) for entry in more]
        for entry, node in zip(more, startup_nodes, strict=True):
            if node is None or not _is_node(node):
                raise ValueError(
                    f"connection {conn_id!r}: `startup_nodes` holds {entry!r}; each entry must be a host "
                    'or host:port, for example "redis-1:6379", with an IPv6 address in brackets '
                    '("[fd00::2]" or "[fd00::2]:6379")'
                )
        nodes = extra.get("nodes") or list(dict.fromkeys(here + startup_nodes))
        if not nodes:
            raise ValueError(f"connection {conn_id!r} names no Redis node: set its host, or a `nodes` extra")
        for name in ("nodes", "previous_nodes"):
            if not isinstance(extra.get(name, []), list):
                raise ValueError(f'connection {conn_id!r}: `{name}` must be a list such as ["redis-0:6379"]')
            for entry in extra.get(name, []):
                if not _is_node(entry):
                    raise ValueError(
                        f"connection {conn_id!r}: extra `{name}` holds {entry!r}; each entry must be "
                        'host:port text, for example "redis-0:6379" (an IPv6 address in brackets, '
                        '"[fd00::5]:6379")'
                    )
        settings: dict[str, Any] = dict(
            nodes=tuple(nodes),
            previous_nodes=tuple(extra.get("previous_nodes", ())),
            cluster=_flag_extra(extra, "cluster", conn_id),
            db=_int_extra(extra, "db", 0, conn_id),
            username=login or None,
            password=password or None,
            ssl=_flag_extra(extra, "ssl", conn_id),
            ssl_cert_reqs=extra.get("ssl_cert_reqs"),
            ssl_ca_certs=extra.get("ssl_ca_certs"),
            ssl_keyfile=extra.get("ssl_keyfile"),
            ssl_certfile=extra.get("ssl_certfile"),
            ssl_check_hostname=_flag_extra(extra, "ssl_check_hostname", conn_id)
            if "ssl_check_hostname" in extra
            else None,
            key_prefix=str(extra.get("key_prefix", DEFAULT_KEY_PREFIX)),
            key_ttl_seconds=_int_extra(extra, "key_ttl_seconds", DEFAULT_KEY_TTL_SECONDS, conn_id),
            batch_size=_int_extra(extra, "batch_size", DEFAULT_BATCH_SIZE, conn_id),
            socket_timeout=_seconds_extra(extra, "socket_timeout", DEFAULT_SOCKET_TIMEOUT, conn_id),
            socket_connect_timeout=_seconds_extra(
                extra, "socket_connect_timeout", DEFAULT_SOCKET_CONNECT_TIMEOUT, conn_id
            ),
            retries=_int_extra(extra, "retries", DEFAULT_RETRIES, conn_id),
            retry_backoff_cap=_seconds_extra(extra, "retry_backoff_cap", DEFAULT_RETRY_BACKOFF_CAP, conn_id),
        )
        try:
            return cls(**settings)
        except ValueError as error:  # the config's own checks (batch size, TTL, key prefix...)
            raise ValueError(f"connection {conn_id!r}: {error}") from None


@dataclass
class WriteReport:
    """What one `write` did: records set, records kept because the store held a later date, and
    records set per node (the cluster counts as one node, `cluster`)."""

    written: int = 0
    kept_newer: int = 0
    by_node: dict[str, int] = field(default_factory=dict)
    # On a Redis Cluster: keys whose slot was moving (ASK) or had moved (MOVED), or whose primary
    # did not answer (a failover), sent again through redis-py's cluster client. Counted among
    # `written` or `kept_newer` like the others.
    redirected: int = 0
    # `replace_date` only: records of the date removed because the date no longer holds their entity.
    removed_stale: int = 0
    # `write(..., report_ids=True)` only: the entities whose record this write set.
    written_ids: list[str] = field(default_factory=list)


class MoveInterruptedError(RuntimeError):
    """A rebalance's copy or compare-and-delete lost its reply (a dropped connection, a timeout):
    the pass stops as a crash would, and a rerun finishes the move."""


@dataclass
class RebalanceReport:
    """What one rebalance pass did, and whether it finished (`complete`)."""

    scanned: int = 0
    moved: int = 0
    # Keys whose new owner already held a record of a later or the same feature date (written there
    # since the switch to the new ring): only deleted from the old node.
    kept_newer: int = 0
    # Keys that left the old node during the move (their TTL ran out, or a delete or a removal of
    # their date): nothing to move, and a copy already made is deleted from the new node.
    expired_during_move: int = 0
    # Keys that changed on the old node during the move: left there for the next pass.
    changed_during_move: int = 0
    moved_from: dict[str, int] = field(default_factory=dict)
    complete: bool = True


def copy_ttl(pttl: int) -> str | None:
    """The write script's ttl argument for a copy of a key whose PTTL reply was `pttl`: "0" for
    no expiry (-1), the remaining milliseconds, or None when the key has expired (-2: gone; 0:
    expiring now), as one can between a GET and a PTTL, so that it is not copied. Copying it with
    ttl "0" would keep it forever."""
    if pttl == -1:
        return "0"
    return str(pttl) if pttl > 0 else None


def _entity_set(entity_ids: pa.Array | pa.ChunkedArray | Iterable[str]) -> pa.Array:
    """Entity ids as one pyarrow binary array (UTF-8, as in the keys), for a set lookup. Ids that
    are not text become `str(id)`, as the written records' ids do (`entity_keys`)."""
    if isinstance(entity_ids, (pa.Array, pa.ChunkedArray)):
        ids = entity_keys(entity_ids)
    else:
        refuse_one_id(entity_ids, taken_by="OnlineStore.remove_stale()")
        ids = pa.array(
            [
                text_id(entity, taken_by="OnlineStore.remove_stale()")
                if isinstance(entity, (bytes, bytearray))  # str(b"u1") is "b'u1'": no id of the store's
                else str(entity)
                for entity in entity_ids
                if entity is not None
            ],
            pa.string(),
        )
    return pc.cast(ids, pa.binary())


def _with_iso_date(view: str, entity: str, record: FeatureRecord) -> FeatureRecord:
    """`record` with its feature date as the format holds it (YYYY-MM-DD), which the write script
    compares as text: a `date` would fail msgpack, and text with a time or another layout would
    sort after, or before, the plain dates of the same day. An error names the view and entity."""
    try:
        day = iso_feature_date(record.feature_date)
    except ValueError as error:
        raise ValueError(f"view {view!r}, entity {entity!r}: {error}") from None
    return record if day == record.feature_date else FeatureRecord(day, record.values)


def _decode(key: bytes, value: bytes) -> FeatureRecord:
    """The record `key` holds; an error names the key."""
    try:
        return decode_record(value)
    except ValueError as error:
        raise ValueError(f"online store key {key!r}: {error}") from None


# How often, and how long apart (seconds), a read waits out a node that answers CLUSTERDOWN, as
# redis-py's cluster client does for its own commands (0.25 s, then its slot table reloaded).
_CLUSTER_DOWN_RETRIES = 3
_CLUSTER_DOWN_WAIT = 0.25


def _get_each(cluster: RedisCluster, keys: Sequence[bytes]) -> list[bytes | None]:
    """The values of `keys`, one single-key MGET per key in redis-py's cluster pipeline (which
    places each when it sends it, and follows ASK, MOVED and a failover). An MGET, not a GET: a key
    that holds no string (another program's hash) answers nil, as in a batch read, where a GET
    answered WRONGTYPE and failed the whole read. A node that answers CLUSTERDOWN for a moment (a
    failover it has not learned of yet) fails the pipeline at once: it is tried again after a wait,
    with the slot table reloaded."""
    waits = 0
    while True:
        pipe = cluster.pipeline()
        for key in keys:
            # redis-py blocks pipe.mget() on a cluster (several keys may span slots); one key cannot
            pipe.execute_command("MGET", key)
        try:
            return [values[0] for values in pipe.execute()]
        except ClusterDownError as error:
            waits += 1
            if waits > _CLUSTER_DOWN_RETRIES:
                raise
            log.info(
                "the cluster answered CLUSTERDOWN (%s): reading again in %s s", error, _CLUSTER_DOWN_WAIT
            )
            time.sleep(_CLUSTER_DOWN_WAIT)
            cluster.nodes_manager.initialize()


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def same_server_message(aliases: Sequence[Sequence[str]]) -> str:
    """What is wrong with node names that are one server (`OnlineStore.servers_listed_twice`)."""
    shown = "; ".join(" and ".join(names) for names in aliases)
    return (
        f"{shown} are the same Redis server (one run_id). The ring hashes node names, so a rebalance "
        "would move keys onto the server they are on and then delete them. Nothing was moved. Give "
        "each server one name, the same in `nodes` and `previous_nodes`."
    )


class OnlineStore:
    """Grouped reads and writes of feature records on the ring (or cluster) of `config`."""

    def __init__(self, config: OnlineStoreConfig) -> None:
        self.config = config
        self._clients: dict[str, redis.Redis] = {}
        # Clients that send each command once: for the rebalance's copy and compare-and-delete.
        self._clients_sending_once: dict[str, redis.Redis] = {}
        self._cluster: RedisCluster | None = None
        # Threads share a store (the layered cache's readers): each client is created once, not
        # once per thread that meets it first, which would leave the others' connections open.
        self._clients_lock = threading.Lock()
        self.ring = None if config.cluster else ShardRing(config.nodes)
        self.previous_ring = ShardRing(config.previous_nodes) if config.previous_nodes else None

    @property
    def every_node(self) -> list[str]:
        """The ring's nodes and, during a rebalance, the previous ones, each once."""
        return list(dict.fromkeys((*self.config.nodes, *self.config.previous_nodes)))

    # -- clients -------------------------------------------------------------------------------
    def client(self, node: str) -> redis.Redis:
        """The client of one ring node, created on first use."""
        with self._clients_lock:
            return self._client_of(node)

    def _client_of(self, node: str) -> redis.Redis:
        if node not in self._clients:
            self._clients[node] = self._new_client(node, retry=self._retry())
        return self._clients[node]

    def client_sending_once(self, node: str) -> redis.Redis:
        """A client of one ring node that never sends a command again: when a connection drops or
        times out before the reply, redis-py's retries would run the command a second time. For a
        script whose reply says what it did (the rebalance's copy and compare-and-delete), the
        second run answers for the first one's work: a key its first run deleted reads as gone."""
        with self._clients_lock:
            if node not in self._clients_sending_once:
                self._clients_sending_once[node] = self._new_client(node, retry=Retry(NoBackoff(), 0))
            return self._clients_sending_once[node]

    def _new_client(self, node: str, *, retry: Retry) -> redis.Redis:
        host, port = _host_port(node)
        return redis.Redis(
            host=host,
            port=port,
            db=self.config.db,
            username=self.config.username,
            password=self.config.password,
            **self._tls_options(),
            **self._socket_options(),
            retry=retry,
        )

    def _socket_options(self) -> dict[str, float]:
        return {
            "socket_timeout": self.config.socket_timeout,
            "socket_connect_timeout": self.config.socket_connect_timeout,
        }

    def _retry(self) -> Retry:
        """A new retry policy per client: redis-py's, with the connection's count and cap."""
        cap = self.config.retry_backoff_cap
        backoff = ExponentialWithJitterBackoff(cap=cap, base=min(_RETRY_BACKOFF_BASE, cap))
        return Retry(backoff, self.config.retries)

    def _tls_options(self) -> dict[str, Any]:
        """redis-py's TLS keyword arguments: `ssl`, and the options the connection sets."""
        if not self.config.ssl:
            return {"ssl": False}
        options = {
            "ssl_cert_reqs": self.config.ssl_cert_reqs,
            "ssl_ca_certs": self.config.ssl_ca_certs,
            "ssl_keyfile": self.config.ssl_keyfile,
            "ssl_certfile": self.config.ssl_certfile,
            "ssl_check_hostname": self.config.ssl_check_hostname,
        }
        return {"ssl": True, **{name: value for name, value in options.items() if value is not None}}

    def cluster_client(self) -> RedisCluster:
        """The Redis Cluster client, created on first use."""
        with self._clients_lock:
            return self._cluster_client()

    def _cluster_client(self) -> RedisCluster:
        if self._cluster is None:
            self._cluster = RedisCluster(
                startup_nodes=[ClusterNode(*_host_port(node)) for node in self.config.nodes],
                username=self.config.username,
                password=self.config.password,
                **self._tls_options(),
                **self._socket_options(),
                # the cluster's own retries; redis-py gives its nodes' connections none
                retry=self._retry(),
            )
        return self._cluster

    def close(self) -> None:
        with self._clients_lock:
            for client in (*self._clients.values(), *self._clients_sending_once.values()):
                client.close()
            self._clients.clear()
            self._clients_sending_once.clear()
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes --------------------------------------------------------------------------------
    def key(self, view: str, entity_id: str) -> bytes:
        return feature_key(self.config.key_prefix, view, entity_id)

    def write(
        self,
        view: str,
        records: Iterable[tuple[str, FeatureRecord]],
        *,
        replace_same_date: bool = True,
        report_ids: bool = False,
    ) -> WriteReport:
        """Set the records of `view` (entity id, record), keeping any later-dated record the store
        holds. Of two records of one entity, the later feature date wins, and on the same date the
        one given last, wherever the batches of `batch_size` split `records` (which is consumed in
        such batches, so it streams). During a rebalance, a later record still on a key's previous
        node is kept too. A record's feature date is a `date` or YYYY-MM-DD text, written as
        YYYY-MM-DD; anything else fails the batch before it is written, naming the entity.
        `replace_same_date` False keeps a held record of the same date too (counted in
        `kept_newer`): a fill, such as the layered cache's write-back of what it computed, which
        must not replace what a publish of that date wrote meanwhile. `report_ids` lists the
        entities whose record this write set in `written_ids`."""
        report = WriteReport()
        ttl = str(self.config.key_ttl_seconds * 1000)
        same_date = _REPLACE_SAME_DATE if replace_same_date else _KEEP_SAME_DATE
        for chunk in _chunks(records, self.config.batch_size):
            latest: dict[str, FeatureRecord] = {}
            for entity, given in chunk:
                record = _with_iso_date(view, entity, given)
                held = latest.get(entity)
                if held is None or held.feature_date <= record.feature_date:
                    latest[entity] = record
            entity_of = {self.key(view, entity): entity for entity in latest}
            values = {key: encode_record(latest[entity]) for key, entity in entity_of.items()}
            if self.config.cluster:
                set_keys, redirected = self._write_cluster(values, ttl, same_date=same_date)
                set_by_node = {"cluster": set_keys}
                report.redirected += redirected
            else:
                for key in self._kept_by_previous_node(values, same_date=same_date):
                    del values[key]
                set_by_node = {
                    node: self._write_node(
                        node, [(key, values[key], ttl) for key in group], same_date=same_date
                    )
                    for node, group in self.ring.group_by_node(values).items()
                }
            for node, keys in set_by_node.items():
                report.by_node[node] = report.by_node.get(node, 0) + len(keys)
                report.written += len(keys)
                if report_ids:
                    report.written_ids.extend(entity_of[key] for key in keys)
            # a record passed over for a later one of the same entity in this chunk counts here too
            report.kept_newer += len(chunk) - sum(len(keys) for keys in set_by_node.values())
        return report

    def _kept_by_previous_node(
        self, values: Mapping[bytes, bytes], *, same_date: str = _REPLACE_SAME_DATE
    ) -> list[bytes]:
        """During a rebalance: the keys about to be written whose previous node (the two rings place
        them on different nodes) still holds a record of a later feature date than the one given
        (or of the same date, with `same_date` _KEEP_SAME_DATE).
        The write script on the owner cannot see that record, so it would set the older one beside
        it, where a removal of the later date (`remove_stale`) would uncover it."""
        if self.previous_ring is None:
            return []
        moving = [key for key in values if self.previous_ring.node_for(key) != self.ring.node_for(key)]
        held = self._mget_by_ring(self.previous_ring, moving)
        keep_same = same_date == _KEEP_SAME_DATE
        kept = []
        for key, value in held.items():
            held_date, given_date = _decode(key, value).feature_date, decode_record(values[key]).feature_date
            if held_date > given_date or (keep_same and held_date == given_date):
                kept.append(key)
        return kept

    def _write_node(
        self,
        node: str,
        entries: Sequence[tuple[bytes, bytes, str]],
        *,
        same_date: str = _REPLACE_SAME_DATE,
        send_once: bool = False,
    ) -> list[bytes]:
        """Run the write script once on `node` for `entries` (key, value, ttl ms); return the keys
        it set. `send_once`: through `client_sending_once`, so that the keys it returns are the
        ones this call set."""
        client = self.client_sending_once(node) if send_once else self.client(node)
        script = client.register_script(_WRITE_IF_NOT_OLDER)
        args = [same_date, *(part for _, value, ttl in entries for part in (value, ttl))]
        return list(script(keys=[key for key, _, _ in entries], args=args))

    def _write_cluster(
        self, values: Mapping[bytes, bytes], ttl: str, *, same_date: str = _REPLACE_SAME_DATE
    ) -> tuple[list[bytes], int]:
        """Run the write script for each key on the cluster; return (the keys set, how many keys
        were redirected)."""
        replies, redirected = self._script_per_key_on_cluster(
            _WRITE_IF_NOT_OLDER, {key: [same_date, value, ttl] for key, value in values.items()}
        )
        return [key for key, reply in replies.items() if reply], redirected

    def _script_per_key_on_cluster(
        self, source: str, args_by_key: Mapping[bytes, Sequence[str | bytes]]
    ) -> tuple[dict[bytes, Any], int]:
        """Run the Lua `source` once per key (KEYS: that key, ARGV: its args) on the cluster; return
        each key's reply, and how many keys were redirected."""
        # A script's keys must share a slot, and redis-py's cluster pipeline refuses scripts: so
        # keys are grouped by the primary that holds their slot, and each key gets its own script
        # call in a plain pipeline to that primary. A plain pipeline does not follow the cluster's
        # redirections, so a key whose slot is moving (ASK) or has moved (MOVED) since the slot
        # table was read, or whose primary does not answer, is sent again through the cluster
        # client, which follows redirections and refreshes its slot table (for the next batch too).
        cluster = self.cluster_client()
        by_primary: dict[str, tuple[ClusterNode, list[bytes]]] = {}
        for key in args_by_key:
            node = cluster.get_node_from_key(key)
            by_primary.setdefault(node.name, (node, []))[1].append(key)
        replies: dict[bytes, Any] = {}
        redirected: list[bytes] = []
        for node, keys in by_primary.values():
            # connects first to a node the client learned of from a redirection
            client = cluster.get_redis_connection(node)
            script = client.register_script(source)
            pipe = client.pipeline(transaction=False)
            for key in keys:
                script(keys=[key], args=list(args_by_key[key]), client=pipe)
            try:
                results = pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError) as error:
                # The primary is gone (a failover, say); the cluster client refreshes its slot
                # table on a connection error and retries, so all its keys go that way.
                log.warning(
                    "cluster node %s did not answer (%s): resending its %d keys", node.name, error, len(keys)
                )
                redirected.extend(keys)
                continue
            for key, result in zip(keys, results, strict=True):
                if isinstance(result, _SLOT_REDIRECTIONS):
                    redirected.append(key)
                elif isinstance(result, Exception):
                    raise result
                else:
                    replies[key] = result
        if redirected:
            log.info(
                "%d keys are on slots the cluster is moving or has moved, or on a node that did not answer: "
                "resent through the cluster client",
                len(redirected),
            )
            script = cluster.register_script(source)
            for key in redirected:
                replies[key] = script(keys=[key], args=list(args_by_key[key]))
        return replies, len(redirected)

    # -- reads ---------------------------------------------------------------------------------
    def read(self, view: str, entity_ids: Iterable[str]) -> dict[str, FeatureRecord]:
        """The records of `entity_ids` in `view` that the store holds (absent ids are left out).
        One MGET per node and batch. During a rebalance, a key that the two rings place on
        different nodes is read from both, and the later feature date wins."""
        refuse_one_id(entity_ids, taken_by="OnlineStore.read()")
        ids = list(dict.fromkeys(entity_ids))
        keys = {self.key(view, entity): entity for entity in ids}
        if self.config.cluster:
            found: dict[bytes, bytes] = {}
            for chunk in _chunks(keys, self.config.batch_size):
                found.update(self._get_cluster(chunk))
            return {keys[key]: _decode(key, value) for key, value in found.items()}
        moving = []
        if self.previous_ring is not None:
            moving = [key for key in keys if self.previous_ring.node_for(key) != self.ring.node_for(key)]
        # The previous node first: a move copies a key before it deletes it, so a key already gone
        # from there is on its new node by the time that is read.
        before = self._mget_by_ring(self.previous_ring, moving) if moving else {}
        records = {key: _decode(key, value) for key, value in self._mget_by_ring(self.ring, keys).items()}
        for key, value in before.items():
            record = _decode(key, value)
            if key not in records or record.feature_date > records[key].feature_date:
                records[key] = record
        return {keys[key]: record for key, record in records.items()}

    def _get_cluster(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        # One MGET per slot (redis-py's mget_nonatomic, pipelined per primary; it follows ASK and
        # MOVED). An MGET of keys that a slot migration has split between two nodes gets TRYAGAIN
        # until that slot's move ends: such a batch is read again with one single-key MGET per key in a cluster
        # pipeline, which never gets TRYAGAIN but is slower (bench/online_store.py). So is a batch
        # that met a primary that does not answer (it died, and a replica took over):
        # mget_nonatomic names each MGET's node before it sends, so its retries ask the dead node
        # again, while the cluster pipeline places each single-key MGET when it sends it, after the cluster
        # client has refreshed its slot table on the connection error.
        cluster = self.cluster_client()
        try:
            replies = cluster.mget_nonatomic(list(keys))
        except (TryAgainError, ClusterError) as error:
            log.info(
                "a slot of this batch is being migrated (%s): reading its %d keys one by one",
                error,
                len(keys),
            )
            replies = _get_each(cluster, keys)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            log.warning(
                "a cluster node did not answer (%s): reading this batch's %d keys again one by one",
                error,
                len(keys),
            )
            replies = _get_each(cluster, keys)
        return {k: v for k, v in zip(keys, replies, strict=True) if v is not None}

    def _mget_by_ring(self, ring: ShardRing, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        for node, group in ring.group_by_node(keys).items():
            client = self.client(node)
            for chunk in _chunks(group, self.config.batch_size):
                found.update((k, v) for k, v in zip(chunk, client.mget(chunk), strict=True) if v is not None)
        return found

    def scan_keys(self, node: str, view: str | None = None) -> Iterator[bytes]:
        """Every featurelake key on one ring node (of one view, when given), by SCAN."""
        pattern = key_pattern(self.config.key_prefix, view)
        yield from self.client(node).scan_iter(match=pattern, count=self.config.batch_size)

    def _on_every_primary(self, scan: Callable[[RedisCluster, ClusterNode], T]) -> dict[str, T]:
        """`scan(cluster, primary)` for each primary of the cluster, by node name. A SCAN goes to one
        named node, so a slot table that still names a primary that died (a failover since this
        client last wrote) fails it: the table is then loaded again from the live nodes, and every
        primary scanned again. The table is loaded afresh first: a client's table learns of a new
        primary only from a redirection to it, so one that predates a node added since (and
        resharded onto) would not scan that node, and would miss its keys."""
        cluster = self.cluster_client()
        cluster.nodes_manager.initialize()
        try:
            return {node.name: scan(cluster, node) for node in cluster.get_primaries()}
        except (redis.ConnectionError, redis.TimeoutError) as error:
            log.warning("a cluster node did not answer (%s): reloading the slot table, scanning again", error)
            cluster.nodes_manager.initialize()
            return {node.name: scan(cluster, node) for node in cluster.get_primaries()}

    def count_keys(self, view: str | None = None) -> dict[str, int]:
        """Keys per node (SCAN); on a cluster, per primary. An estimate while keys are written: SCAN
        may return a key twice while a node resizes its table, and each such key counts twice."""
        pattern = key_pattern(self.config.key_prefix, view)
        if self.config.cluster:
            return self._on_every_primary(
                lambda cluster, node: sum(
                    1 for _ in cluster.scan_iter(match=pattern, count=1000, target_nodes=node)
                )
            )
        return {node: sum(1 for _ in self.scan_keys(node, view)) for node in self.every_node}

    # -- removals -----------------------------------------------------------------------------
    def removals_key(self, view: str) -> bytes:
        """The key that counts the removals of `view` begun: `<prefix>;removals:<view>`. It has one
        colon where every feature key has two, and no SCAN of the prefix's or the view's keys
        (`<prefix>:*`) meets it."""
        key_pattern(self.config.key_prefix, view)  # checks both names
        return f"{self.config.key_prefix};removals:{view}".encode()

    def removals(self, view: str, entity_ids: Iterable[str]) -> dict[str, int]:
        """How many removals of `view` (`remove_stale`, so every publish of a date) have begun, by
        node: on a ring, the nodes that own the keys of `entity_ids` on either ring of a rebalance,
        each of which counts every removal; on a cluster, the one count. A
        fill that reads this before it reads the lake and again after it wrote knows whether a
        removal may have run in between, and taken back a record that the fill then wrote again
        (the layered cache's write-back). Only the owners are read, so that a node down elsewhere
        fails no fill that does not write to it."""
        key = self.removals_key(view)
        if self.config.cluster:
            return {"cluster": int(self.cluster_client().get(key) or 0)}
        refuse_one_id(entity_ids, taken_by="OnlineStore.removals()")
        keys = [self.key(view, entity) for entity in entity_ids]
        rings = [self.ring] if self.previous_ring is None else [self.ring, self.previous_ring]
        nodes = sorted({node for ring in rings for node in ring.group_by_node(keys)})
        return {node: int(self.client(node).get(key) or 0) for node in nodes}

    def _count_removal(self, view: str) -> None:
        """Add one to the removals of `view`: on every node, previous ones included, so that a
        fill on either ring of a rebalance sees it; on a cluster, in the one key's slot."""
        key = self.removals_key(view)
        if self.config.cluster:
            self.cluster_client().incr(key)
            return
        for node in self.every_node:
            self.client(node).incr(key)

    def delete_if_unchanged(self, view: str, records: Mapping[str, FeatureRecord]) -> int:
        """Delete each record of `records` (entity id: record) that the store still holds as given,
        byte for byte, and leave any other; return how many keys were deleted. On a ring, on the
        key's owner, where `write` puts it."""
        values = {
            self.key(view, entity): encode_record(_with_iso_date(view, entity, record))
            for entity, record in records.items()
        }
        if self.config.cluster:
            replies, _ = self._script_per_key_on_cluster(
                _DELETE_IF_UNCHANGED, {key: [value] for key, value in values.items()}
            )
            return sum(int(reply[0]) for reply in replies.values())
        return self._delete_unchanged_on_owners(values)

    def _delete_unchanged_on_owners(self, values: Mapping[bytes, bytes]) -> int:
        """On a ring: delete each key of `values` from its owner where the owner still holds the
        given bytes; return how many were deleted."""
        deleted = 0
        for owner, keys in self.ring.group_by_node(values).items():
            script = self.client(owner).register_script(_DELETE_IF_UNCHANGED)
            for chunk in _chunks(keys, self.config.batch_size):
                deleted += int(script(keys=chunk, args=[values[key] for key in chunk])[0])
        return deleted

    # -- replacing a date, deleting -----------------------------------------------------------
    def replace_date(
        self,
        view: str,
        feature_date: date | str,
        records: Iterable[tuple[str, FeatureRecord]],
        entity_ids: pa.Array | pa.ChunkedArray | Iterable[str],
    ) -> WriteReport:
        """Publish one date of `view`: `write` its `records`, then `remove_stale` the records of
        that date whose entity is not in `entity_ids` (every entity the date holds; none for a date
        with no entity). The store then holds the date as given and keeps records of later dates."""
        day = iso_feature_date(feature_date)  # refused before anything is written
        report = self.write(view, records)
        report.removed_stale = self.remove_stale(view, day, entity_ids)
        return report

    def remove_stale(
        self,
        view: str,
        feature_date: date | str,
        entity_ids: pa.Array | pa.ChunkedArray | Iterable[str],
    ) -> int:
        """Delete the records of `view` dated `feature_date` whose entity is not in `entity_ids`;
        return how many keys were removed. SCAN reads the key names of every node (on a cluster,
        every primary); the keys of entities outside `entity_ids` are the candidates, and a script
        deletes each candidate only if it still holds a record of that date, so a record of another
        date, or one a writer put there meanwhile with a later date, stays."""
        day = iso_feature_date(feature_date)
        keep = _entity_set(entity_ids)
        pattern = key_pattern(self.config.key_prefix, view)
        # Counted before the SCAN: a fill that computed from the partition this date's rerun
        # replaced, and writes after the removal, sees the count change (`removals`).
        self._count_removal(view)
        head = pattern.removesuffix("*").encode()
        removed: set[bytes] = set()
        if self.config.cluster:
            scanned = self._on_every_primary(
                lambda cluster, primary: set(
                    self._outside(
                        cluster.scan_iter(match=pattern, count=self.config.batch_size, target_nodes=primary),
                        head,
                        keep,
                    )
                )
            )
            candidates: set[bytes] = set().union(*scanned.values())
            for chunk in _chunks(candidates, self.config.batch_size):
                replies, _ = self._script_per_key_on_cluster(_DELETE_IF_DATED, {key: [day] for key in chunk})
                removed.update(key for key, reply in replies.items() if reply)
        else:
            found_on = {
                node: self._outside(self.scan_keys(node, view), head, keep) for node in self.every_node
            }
            # Where each candidate was found, then on its owner on the ring: last, because a
            # rebalance that moves the key meanwhile copies it there before deleting it here.
            for node, keys in found_on.items():
                removed.update(
                    self._delete_dated(node, [k for k in keys if self.ring.node_for(k) != node], day)
                )
            candidates = {key for keys in found_on.values() for key in keys}
            removed_on_owner: list[bytes] = []
            for owner, keys in self.ring.group_by_node(candidates).items():
                removed_on_owner.extend(self._delete_dated(owner, keys, day))
            removed.update(removed_on_owner)
            # During a rebalance, a key's previous node may still hold an older record that the
            # owner's record of the date replaced (a write on the new ring leaves it there until
            # the move): removed too, as on one node the date's record replaced it.
            if self.previous_ring is not None:
                superseded: list[bytes] = []
                for node, keys in self.previous_ring.group_by_node(removed_on_owner).items():
                    moving = [key for key in keys if self.ring.node_for(key) != node]
                    superseded.extend(moving)
                    removed.update(self._delete_dated(node, moving, day, or_before=True))
                # A rebalance pass between the owner's delete and that one may have copied the
                # older record to the owner, empty by then, and deleted it from the previous node:
                # it goes from the owner too. (A copy landing later finds its key gone from the
                # previous node, and the pass takes it back.)
                for owner, keys in self.ring.group_by_node(superseded).items():
                    removed.update(self._delete_dated(owner, keys, day, or_before=True))
        log.info(
            "%s of %s: removed %d records of entities the date no longer holds (%d keys of other "
            "entities checked; those of other dates stay)",
            view,
            day,
            len(removed),
            len(candidates),
        )
        return len(removed)

    def _outside(self, keys: Iterable[bytes], head: bytes, keep: pa.Array) -> list[bytes]:
        """The keys (all starting with `head`) whose entity is not in `keep`; one set lookup for
        all of them, as pyarrow builds its hash table of `keep` on each call."""
        pages = [pa.array([key[len(head) :] for key in page], pa.binary()) for page in _chunks(keys, 10_000)]
        if not pages:
            return []
        entities = pa.chunked_array(pages, pa.binary())
        outside = entities.filter(pc.invert(pc.is_in(entities, value_set=keep)))
        return [head + entity for entity in outside.to_pylist()]

    def _delete_dated(
        self, node: str, keys: Sequence[bytes], day: str, *, or_before: bool = False
    ) -> list[bytes]:
        """Run the compare-and-delete script on `node` in batches (records of `day`, or with
        `or_before` of `day` or an earlier date); return the keys it deleted."""
        script = self.client(node).register_script(_DELETE_IF_DATED)
        mode = "<=" if or_before else "="
        return [
            key
            for chunk in _chunks(keys, self.config.batch_size)
            for key in script(keys=chunk, args=[day, mode])
        ]

    def delete(self, view: str, entity_ids: Iterable[str]) -> int:
        """Delete the records of `entity_ids` in `view`, whatever their date; return how many of
        their keys were deleted. On a ring during a rebalance, from the previous owner and then the
        owner: a key held by both (a move that had copied it) is one key deleted."""
        refuse_one_id(entity_ids, taken_by="OnlineStore.delete()")
        keys = list(dict.fromkeys(self.key(view, entity) for entity in entity_ids))
        deleted = 0
        if self.config.cluster:
            # One DEL per key, pipelined to its primary as writes are, so that it follows ASK and
            # MOVED and a failover: redis-py's multi-key delete names each slot's node before it
            # sends, and asks a primary that died again.
            for chunk in _chunks(keys, self.config.batch_size):
                replies, _ = self._script_per_key_on_cluster(_DELETE_KEY, {key: [] for key in chunk})
                deleted += sum(int(reply) for reply in replies.values())
            return deleted
        groups: list[tuple[str, list[bytes]]] = []
        if self.previous_ring is not None:
            for node, group in self.previous_ring.group_by_node(keys).items():
                groups.append((node, [key for key in group if self.ring.node_for(key) != node]))
        groups.extend(self.ring.group_by_node(keys).items())
        deleted_keys: set[bytes] = set()
        for node, group in groups:
            for chunk in _chunks(group, self.config.batch_size):
                pipeline = self.client(node).pipeline(transaction=False)
                for key in chunk:
                    pipeline.delete(key)
                deleted_keys.update(
                    key for key, count in zip(chunk, pipeline.execute(), strict=True) if count
                )
        return len(deleted_keys)

    # -- rebalance -----------------------------------------------------------------------------
    def servers_listed_twice(self) -> list[list[str]]:
        """The groups of names among `nodes` and `previous_nodes` that are one Redis server (one
        `run_id`, from INFO): a host name and an address of the same server, say. A node that
        refuses INFO (some managed services rename it away) is not checked, with a warning."""
        names_of: dict[str, list[str]] = {}
        for node in self.every_node:
            try:
                run_id = self.client(node).info("server")["run_id"]
            except redis.ResponseError as error:
                log.warning("%s refuses INFO (%s): cannot check that it is listed once", node, error)
                continue
            names_of.setdefault(run_id, []).append(node)
        return [names for names in names_of.values() if len(names) > 1]

    def rebalance(self, *, max_keys: int | None = None) -> RebalanceReport:
        """Move every key the ring (`nodes`) places on another node than the one holding it. Scans
        every node of `nodes` and `previous_nodes`. `max_keys` stops after that many moves (the
        report is then not `complete`; run again to go on). Refuses, before moving anything, names
        that are one server (`servers_listed_twice`), and a pass while another one runs
        (`RebalanceRunningError`: two at once lose keys; see `featurelake.rebalance_lock`)."""
        if self.ring is None:
            raise ValueError("a Redis Cluster rebalances its own slots: use `redis-cli --cluster rebalance`")
        if aliases := self.servers_listed_twice():
            raise ValueError(same_server_message(aliases))
        lock = RebalanceLock(
            {node: self.client(node) for node in self.every_node}, key_prefix=self.config.key_prefix
        )
        with lock.held():
            return self._rebalance_holding(lock, max_keys=max_keys)

    def _rebalance_holding(self, lock: RebalanceLock, *, max_keys: int | None) -> RebalanceReport:
        report = RebalanceReport()
        for node in self.every_node:
            for scanned in _chunks(self.scan_keys(node), self.config.batch_size):
                # SCAN may return a key twice (Redis guarantees each key at least once), more so
                # while the moves shrink the node's table. Twice in one move, the key's first
                # delete succeeded and its second found it gone, which took back its copy: the
                # key was lost from both nodes. In a later page it is a key gone, counted so.
                page = list(dict.fromkeys(scanned))
                report.scanned += len(page)
                misplaced = [key for key in page if self.ring.node_for(key) != node]
                # Keys that expire during their move are not moves: the page goes on until
                # `max_keys` keys have moved, so that none of it is skipped before then.
                while misplaced:
                    room = len(misplaced) if max_keys is None else max_keys - report.moved
                    if room <= 0:
                        break
                    lock.check()
                    self._move(node, misplaced[:room], report)
                    misplaced = misplaced[room:]
                if max_keys is not None and report.moved >= max_keys:
                    report.complete = False
                    log.info(
                        "rebalance stopped after %d moves (max_keys); run it again to go on", report.moved
                    )
                    return report
        log.info(
            "rebalance: scanned %d keys, moved %d (%s), %d kept a newer record, %d expired, "
            "%d changed during the move",
            report.scanned,
            report.moved,
            report.moved_from,
            report.kept_newer,
            report.expired_during_move,
            report.changed_during_move,
        )
        report.complete = report.changed_during_move == 0
        return report

    def _move(self, source: str, keys: Sequence[bytes], report: RebalanceReport) -> None:
        pipe = self.client(source).pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        replies = pipe.execute(raise_on_error=False)
        for key, reply in zip(keys, replies[::2], strict=True):
            if isinstance(reply, redis.ResponseError) and str(reply).startswith("WRONGTYPE"):
                # another program's hash or list under the prefix: redis-py's bare WRONGTYPE said
                # nothing of what to do, and every retry of the task failed the same way
                raise ValueError(
                    f"key {key.decode(errors='backslashreplace')} on {source} holds no featurelake record (a Redis "
                    f"{self.client(source).type(key).decode()}, not a string): delete it if nothing else "
                    "needs it, or give featurelake its own key_prefix; then run the rebalance again"
                )
        if failed := next((reply for reply in replies if isinstance(reply, Exception)), None):
            raise failed
        copies = [
            (key, value, copy_ttl(pttl))
            for key, value, pttl in zip(keys, replies[::2], replies[1::2], strict=True)
            if value is not None  # else expired since the scan
        ]
        present = [(key, value, ttl) for key, value, ttl in copies if ttl is not None]
        report.expired_during_move += len(keys) - len(present)
        if not present:
            return
        by_key = {entry[0]: entry for entry in present}
        copied: set[bytes] = set()
        # The copy and the compare-and-delete are sent once: a resent copy finds its own copy and
        # reports it kept (so it is not taken back if the key is deleted meanwhile), and a resent
        # delete finds the key its first run deleted gone (so the copy is taken back: the key is
        # on no node). A lost reply stops the pass as a crash would, each key on one node or both.
        try:
            for owner, group in self.ring.group_by_node(by_key).items():
                written = self._write_node(
                    owner, [by_key[key] for key in group], same_date=_KEEP_SAME_DATE, send_once=True
                )
                copied.update(written)
                report.kept_newer += len(group) - len(written)
            delete = self.client_sending_once(source).register_script(_DELETE_IF_UNCHANGED)
            deleted, gone, changed = delete(
                keys=[key for key, _, _ in present], args=[value for _, value, _ in present]
            )
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise MoveInterruptedError(
                f"the move of {len(present)} keys from {source} to their ring nodes lost a reply "
                f"({type(error).__name__}: {error}): each of them is on its old node, its new one, or "
                "both with the same bytes; run the rebalance again (a retry of the task) to finish it"
            ) from error
        report.expired_during_move += len(gone)
        report.changed_during_move += len(changed)
        report.moved += int(deleted)
        report.moved_from[source] = report.moved_from.get(source, 0) + int(deleted)
        # Only the copies this move wrote: where the owner held the key already (a writer on the
        # new ring), the record there is its own, and stays whatever became of the old one.
        if outdated := [by_key[key] for key in (*gone, *changed) if key in copied]:
            self._take_back_copies(source, outdated)

    def _take_back_copies(self, source: str, entries: Sequence[tuple[bytes, bytes, str]]) -> None:
        """Delete the copies of `entries` (key, copied value, ttl) from their owners where the owner
        still holds the copied bytes: the key changed on `source` or left it after it was read, so
        the copy is outdated. A key deleted there meanwhile (`delete`, or `remove_stale` of its
        date, which ran on the owner before the copy landed) would come back through its copy, and
        live on until its TTL ran out, or forever without one. A key changed there (a writer still
        on the old ring) stays for the next pass, which would keep a copy of the same feature date
        as the change (a record of that date on the owner counts as the current one) and delete the
        change. A key that expired has a copy that expires as it did: deleting it changes nothing.
        Only copies the move wrote are given: a key the owner already held keeps its record."""
        taken_back = self._delete_unchanged_on_owners({key: value for key, value, _ in entries})
        log.info(
            "%d keys changed or left %s during their move (changed ones stay for the next pass): %d "
            "outdated copies deleted from their new node",
            len(entries),
            source,
            taken_back,
        )
