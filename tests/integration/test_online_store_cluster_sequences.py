"""A model-based stress test of the online store on a real Redis Cluster (3 primaries with a replica
each). Random sequences of publishes (`replace_date`) of a few dates in any order (reruns of a date
without some entities, older dates after newer ones as a backfill does), grouped reads of present
and absent keys, deletes, `count_keys` and TTL expiry run against a model of docs/online-store.md,
while the cluster moves two slots by hand (MIGRATE, so ASK and MOVED), reshards live
(`redis-cli --cluster reshard`), fails a primary over to its replica (`CLUSTER FAILOVER`), or loses
a primary's process (its replica is promoted, and the node restarts as a replica). Beside them, a
writer thread publishes ever later dates (and backfills) of other entities, reader threads (one
store of their own, two sharing one) check that they never miss a key nor read an older record
than one already read or than the last finished write, and a thread counts keys on the shared store.

Then the defects the sequences led to: a count and a removal that miss a primary added after the
client loaded its slot table, a node answering CLUSTERDOWN for a moment, and threads that each
built their own cluster client for one shared store.

FEATURELAKE_CLUSTER_SEQUENCES sets the number of sequences (default 4: one per event), and
FEATURELAKE_CLUSTER_SEED the first seed."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from featurelake.feature_records import FeatureRecord, feature_key
from featurelake.local_redis import LocalRedisCluster, LocalRedisServer
from featurelake.online_store import DEFAULT_KEY_PREFIX, OnlineStore, OnlineStoreConfig
from tests.support import redis_client

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

VIEW = "seq_features"
STABLE_VIEW = "seq_stable"
DATES = [(date(2026, 10, 20) + timedelta(days=i)).isoformat() for i in range(5)]
SEQUENCES = int(os.environ.get("FEATURELAKE_CLUSTER_SEQUENCES", "4"))
FIRST_SEED = int(os.environ.get("FEATURELAKE_CLUSTER_SEED", "0"))
# The event each sequence meets, by seed; the kill restarts the node afterwards. Odd seeds give
# their keys a TTL of 2 s.
EVENTS = ["migrate", "failover", "reshard", "kill"]
# A key within this many seconds of its expiry may be there or not.
TTL_SLACK = 0.35


def _hot_entities(slots: int = 6, per_slot: int = 6) -> dict[int, list[str]]:
    """Entities that share a slot, `per_slot` of them in each of `slots` slots: the slots that move."""
    by_slot: dict[int, list[str]] = {}
    full: list[int] = []
    for i in range(400_000):
        entity = f"h{i:06d}"
        names = by_slot.setdefault(key_slot(feature_key(DEFAULT_KEY_PREFIX, VIEW, entity)), [])
        names.append(entity)
        if len(names) == per_slot:
            full.append(key_slot(feature_key(DEFAULT_KEY_PREFIX, VIEW, entity)))
            if len(full) == slots:
                return {slot: by_slot[slot] for slot in full}
    raise AssertionError("found too few shared slots")


HOT = _hot_entities()
ENTITIES = [f"e{i:04d}" for i in range(240)] + [e for names in HOT.values() for e in names]
ABSENT = [f"zz{i:03d}" for i in range(20)]


# -- the cluster -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(primaries=3, replicas=1, node_timeout_ms=1000) as started:
        yield started


def nodes_table(address: str) -> list[list[str]]:
    with redis_client(address) as client:
        return [line.split() for line in client.execute_command("CLUSTER", "NODES").decode().splitlines()]


def live_addresses(cluster: LocalRedisCluster) -> list[str]:
    return [server.address for server in cluster.servers if server.running]


def topology(cluster: LocalRedisCluster) -> tuple[dict[str, str], dict[str, str]]:
    """(primary address -> its node id, replica address -> its primary's address) of live nodes."""
    table = nodes_table(live_addresses(cluster)[0])
    address_of = {f[0]: f[1].split("@")[0] for f in table}
    primaries = {address_of[f[0]]: f[0] for f in table if "master" in f[2] and "fail" not in f[2]}
    replicas = {
        address_of[f[0]]: address_of[f[3]]
        for f in table
        if "slave" in f[2] and "fail" not in f[2] and address_of[f[3]] in primaries
    }
    return primaries, replicas


def knows(address: str, node: str) -> bool:
    """Whether the node at `address` lists `node` and sees the cluster ok."""
    with redis_client(address) as client:
        listed = node in client.execute_command("CLUSTER", "NODES").decode()
        return listed and client.cluster("info").get("cluster_state") == "ok"


def owner_of_slot(address: str, slot: int) -> str:
    with redis_client(address) as client:
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return f"{primary[0].decode()}:{primary[1]}"
    raise AssertionError(f"slot {slot} has no owner")


def wait_for(condition, what: str, timeout: float = 30, cluster: LocalRedisCluster | None = None) -> None:
    """Wait for `condition`; on a timeout, say what every live node of `cluster` saw."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.ConnectionError, redis.ResponseError):
            pass
        if time.monotonic() >= deadline:
            seen = f"\n{cluster_views(cluster)}" if cluster is not None else ""
            raise AssertionError(f"{what}: not within {timeout} s{seen}")
        time.sleep(0.05)


def cluster_views(cluster: LocalRedisCluster, log_lines: int = 12) -> str:
    """Each live node's cluster_state, replication link, CLUSTER NODES and the end of its log, for
    a failure message."""
    views = []
    for address in live_addresses(cluster):
        try:
            with redis_client(address) as client:
                state = client.cluster("info").get("cluster_state")
                replication = client.info("replication")
                nodes = client.execute_command("CLUSTER", "NODES").decode()
            link = replication.get("master_link_status", "-")
            views.append(f"{address}: state {state}, role {replication['role']}, link {link}\n{nodes}")
        except redis.RedisError as error:  # a node that does not answer: its log matters most
            views.append(f"{address}: {error}")
        log_file = cluster.server(address).log_file
        if log_file is not None and log_file.exists():
            logged = log_file.read_text(errors="replace").splitlines()[-log_lines:]
            views.append("its log ends:\n" + "\n".join(logged))
    return "\n".join(views)


def cluster_ok(address: str) -> bool:
    with redis_client(address) as client:
        return client.cluster("info").get("cluster_state") == "ok"


def role(address: str) -> str:
    with redis_client(address) as client:
        return client.execute_command("ROLE")[0].decode()


def settled(cluster: LocalRedisCluster) -> bool:
    """Every live node sees the cluster ok, 3 primaries, and every replica's link up."""
    for address in live_addresses(cluster):
        with redis_client(address) as client:
            if client.cluster("info").get("cluster_state") != "ok":
                return False
            info = client.info("replication")
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
    primaries, replicas = topology(cluster)
    return len(primaries) == 3 and len(replicas) == len(live_addresses(cluster)) - 3


def in_sync(primary: str) -> bool:
    """Whether every replica of `primary` has its whole replication stream."""
    with redis_client(primary) as client:
        info = client.info("replication")
    offsets = [v["offset"] for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return bool(offsets) and all(offset == info["master_repl_offset"] for offset in offsets)


class SlotMove:
    """A hand-made migration of some slots to other primaries: begin (IMPORTING/MIGRATING and half
    of each slot's keys moved), then finish (the rest moved, the slot assigned)."""

    def __init__(self, cluster: LocalRedisCluster, rng: random.Random) -> None:
        primaries, _ = topology(cluster)
        self.ids = primaries
        self.cluster = cluster
        self.moves = []
        for slot in rng.sample(sorted(HOT), 2):
            source = owner_of_slot(next(iter(primaries)), slot)
            target = rng.choice([p for p in primaries if p != source])
            self.moves.append((slot, source, target))

    def _migrate(self, source: str, target: str, keys: list[bytes]) -> None:
        if keys:
            host, port = target.rsplit(":", 1)
            with redis_client(source) as src:
                src.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *keys)

    def begin(self) -> None:
        for slot, source, target in self.moves:
            with redis_client(source) as src, redis_client(target) as dst:
                dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.ids[source])
                src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.ids[target])
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
            self._migrate(source, target, keys[: len(keys) // 2])

    def finish(self) -> None:
        for slot, source, target in self.moves:
            with redis_client(source) as src:
                rest = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
            self._migrate(source, target, rest)
            for address in [target, source, *(p for p in self.ids if p not in (source, target))]:
                with redis_client(address) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", self.ids[target])
        wait_for(
            lambda: all(
                owner_of_slot(a, slot) == target
                for a in live_addresses(self.cluster)
                for slot, _, target in self.moves
            ),
            "every node learns the slots' new owners",
        )


class LiveReshard:
    """`redis-cli --cluster reshard` of some slots from one primary to another, in the background
    while the sequence goes on."""

    def __init__(self, cluster: LocalRedisCluster, rng: random.Random, slots: int) -> None:
        primaries, _ = topology(cluster)
        source, target = rng.sample(sorted(primaries), 2)
        command = ["redis-cli", "--cluster", "reshard", source, "--cluster-from", primaries[source]]
        command += ["--cluster-to", primaries[target], "--cluster-slots", str(slots), "--cluster-yes"]
        command += ["--cluster-pipeline", "2"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self, cluster: LocalRedisCluster) -> None:
        output, _ = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, output[-2000:]
        wait_for(lambda: settled(cluster), "the cluster settles after the reshard", cluster=cluster)


def failover(cluster: LocalRedisCluster, rng: random.Random) -> None:
    _, replicas = topology(cluster)
    replica = rng.choice(sorted(replicas))
    primary = replicas[replica]
    with redis_client(replica) as client:
        client.execute_command("CLUSTER", "FAILOVER")
    wait_for(lambda: (role(replica), role(primary)) == ("master", "slave"), "the manual failover")
    wait_for(lambda: settled(cluster), "the cluster settles after the failover", cluster=cluster)


def kill_primary(cluster: LocalRedisCluster, rng: random.Random, writer_lock: threading.Lock) -> str:
    """Kill a primary once its replica holds all its writes; wait for the promotion. Returns the
    dead node's address."""
    _, replicas = topology(cluster)
    replica = rng.choice(sorted(replicas))
    primary = replicas[replica]
    with writer_lock:  # the stable writer's acknowledged writes must reach the replica
        wait_for(lambda: in_sync(primary), "the replica catches up")
        cluster.server(primary).kill()
    survivors = live_addresses(cluster)
    wait_for(
        lambda: role(replica) == "master" and all(cluster_ok(a) for a in survivors),
        "the replica is promoted",
        timeout=60,
    )
    return primary


def restart(cluster: LocalRedisCluster, address: str) -> None:
    cluster.server(address).restart()
    wait_for(lambda: role(address) == "slave", "the restarted node rejoins as a replica")
    wait_for(lambda: settled(cluster), "the cluster settles after the restart", timeout=60, cluster=cluster)


# -- the model -------------------------------------------------------------------------------------
@dataclass
class Held:
    record: FeatureRecord
    # monotonic seconds: the key expires within [expires_from, expires_to]; None: never
    expires_from: float | None
    expires_to: float | None


class Model:
    """What docs/online-store.md promises the store holds."""

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.held: dict[str, Held] = {}

    def state(self, entity: str, start: float, end: float) -> str:
        """'live', 'gone' or 'unsure' over an operation that ran from `start` to `end`."""
        held = self.held.get(entity)
        if held is None:
            return "gone"
        if held.expires_from is None or end < held.expires_from - TTL_SLACK:
            return "live"
        if start > held.expires_to + TTL_SLACK:
            return "gone"
        return "unsure"

    def forget_expired(self, now: float) -> None:
        for entity in [e for e in self.held if self.state(e, now, now) == "gone"]:
            del self.held[entity]

    def unsure(self, start: float, end: float) -> list[str]:
        return [e for e in self.held if self.state(e, start, end) == "unsure"]

    def live_between(self, entities, start: float, end: float) -> tuple[int, int]:
        """(certainly there, maybe there) of `entities` over an operation from `start` to `end`:
        what it counts or deletes of them lies between the first and their sum. An operation
        slower than wait_out_unsure's look-ahead (a loaded machine) can meet a key's expiry."""
        states = [self.state(e, start, end) for e in entities]
        return states.count("live"), states.count("unsure")

    def publish(self, day: str, records: list[tuple[str, FeatureRecord]], ids: set[str], start, end):
        """replace_date: returns the records written, those removed (by entity), and those kept
        out by a newer record that may have expired during the write, which wrote them if so
        (`settle` tells which)."""
        unsure = set(self.unsure(start, end))
        latest: dict[str, FeatureRecord] = {}
        for entity, record in records:
            if entity not in latest or latest[entity].feature_date <= record.feature_date:
                latest[entity] = record
        written = 0
        maybe_written: dict[str, FeatureRecord] = {}
        for entity, record in latest.items():
            held = self.held.get(entity)
            if held is not None and held.record.feature_date > record.feature_date and entity in unsure:
                maybe_written[entity] = record
            if held is None or held.record.feature_date <= record.feature_date:
                self.held[entity] = Held(
                    record,
                    start + self.ttl if self.ttl else None,
                    end + self.ttl if self.ttl else None,
                )
                written += 1
        removed = {e: h for e, h in self.held.items() if h.record.feature_date == day and e not in ids}
        for entity in removed:
            del self.held[entity]
        return written, removed, maybe_written

    def settle(self, got: dict[str, FeatureRecord], maybe_written: dict[str, FeatureRecord], start, end):
        """Which of `maybe_written` the write did write (their newer record had expired), from a
        read of them after it (`got`)."""
        for entity, record in maybe_written.items():
            if got.get(entity) == record:
                self.held[entity] = Held(record, start + self.ttl, end + self.ttl)


def wait_out_unsure(model: Model, ahead: float) -> None:
    """Sleep until no key is near its expiry during the next `ahead` seconds, so that an operation
    meets every key certainly there or certainly gone."""
    while True:
        now = time.monotonic()
        near = model.unsure(now, now + ahead)
        if not near:
            model.forget_expired(now)
            return
        time.sleep(max(0.05, max(model.held[e].expires_to for e in near) + TTL_SLACK - now + 0.01))


# -- the concurrent writer and readers of another view --------------------------------------------
class Background:
    """A writer of ever later dates (and backfills of old ones) of STABLE entities, and readers."""

    STABLE = [f"c{i:04d}" for i in range(300)]

    def __init__(self, config: OnlineStoreConfig) -> None:
        self.config = config
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.floor = date(2027, 1, 1)
        self.problems: list[str] = []
        self.errors: list[str] = []
        self.reads = 0
        self.writes = 0
        # Set while a primary is down, and until every thread has worked again since its replica
        # was promoted (`end_outage`): failures are expected. An operation that began before the
        # promotion may fail any time after it, however long that takes on a busy machine.
        self.outage = threading.Event()
        self.worked: dict[str, float] = {}  # thread -> when its last successful operation began
        with OnlineStore(config) as store:
            assert store.write(STABLE_VIEW, self.dated(self.floor)).written == len(self.STABLE)
        shared = OnlineStore(config)
        self.stores = [OnlineStore(config), shared, shared]
        self.counts = 0
        self.threads = [
            threading.Thread(target=self.write_days, name="writer"),
            threading.Thread(target=self.count, name="counter"),
        ] + [
            threading.Thread(target=self.read_all, args=(store, n), name=f"reader {n}")
            for n, store in enumerate(self.stores)
        ]

    def succeeded(self, began: float) -> None:
        """The calling thread's operation that began at `began` succeeded."""
        self.worked[threading.current_thread().name] = began

    def end_outage(self, promoted: float) -> None:
        """Clear `outage` once every thread has succeeded in an operation begun after `promoted`:
        its client knows the new primary, and each thread's earlier operations have ended."""
        wait_for(
            lambda: all(self.worked.get(thread.name, 0.0) > promoted for thread in self.threads),
            f"every background thread works again after the promotion ({self.worked}, {promoted})",
            timeout=120,
        )
        self.outage.clear()

    def dated(self, day: date) -> list[tuple[str, FeatureRecord]]:
        return [(e, FeatureRecord(day.isoformat(), {"d": day.isoformat(), "e": e})) for e in self.STABLE]

    def failed(self, what: str, error: Exception) -> None:
        message = f"{what}: {type(error).__name__}: {error}"
        if self.outage.is_set():
            self.errors.append(message)
        else:
            self.problems.append(message)
        time.sleep(0.1)

    def write_days(self) -> None:
        day = self.floor
        with OnlineStore(self.config) as writer:
            while not self.stop.is_set():
                with self.lock:
                    began = time.monotonic()
                    try:
                        if self.writes % 4 == 3:  # a backfill: every record is kept out
                            report = writer.write(STABLE_VIEW, self.dated(day - timedelta(days=30)))
                            if report.written:
                                self.problems.append(f"a backfill replaced {report.written} later records")
                        else:
                            report = writer.write(STABLE_VIEW, self.dated(day + timedelta(days=1)))
                            if report.written != len(self.STABLE):
                                self.problems.append(f"a later write wrote {report.written} records")
                            day += timedelta(days=1)
                            self.floor = day
                        self.writes += 1
                        self.succeeded(began)
                    except (redis.RedisError, OSError) as error:
                        self.failed("write", error)
                time.sleep(0.005)

    def count(self) -> None:
        """Counts on the store the readers share (it reloads the slot table meanwhile). The count
        is not checked: a SCAN may meet a key twice or not at all while its slot moves."""
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                self.stores[1].count_keys(STABLE_VIEW)
                self.counts += 1
                self.succeeded(began)
            except (redis.RedisError, OSError) as error:
                self.failed("count", error)
            time.sleep(0.05)

    def read_all(self, store: OnlineStore, n: int) -> None:
        seen: dict[str, str] = {}
        while not self.stop.is_set():
            floor = self.floor.isoformat()
            began = time.monotonic()
            try:
                got = store.read(STABLE_VIEW, self.STABLE)
            except (redis.RedisError, OSError) as error:
                self.failed(f"reader {n}", error)
                continue
            self.succeeded(began)
            time.sleep(0.01)
            self.reads += 1
            if len(got) != len(self.STABLE):
                self.problems.append(f"reader {n} missed {len(self.STABLE) - len(got)} keys")
            for entity, record in got.items():
                if record.feature_date < floor or record.feature_date < seen.get(entity, ""):
                    self.problems.append(
                        f"reader {n} read {entity} of {record.feature_date} after "
                        f"{seen.get(entity)} (last finished write {floor})"
                    )
                if record.values["d"] != record.feature_date:
                    self.problems.append(f"reader {n} read {entity}: {record}")
                seen[entity] = record.feature_date

    def __enter__(self) -> Background:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        for store in self.stores:
            store.close()


# -- one sequence ----------------------------------------------------------------------------------
def check_read(store: OnlineStore, model: Model, ids: list[str], seed: int, step: int) -> None:
    start = time.monotonic()
    got = store.read(VIEW, ids)
    end = time.monotonic()
    for entity in ids:
        state = model.state(entity, start, end)
        where = f"seed {seed} step {step}: {entity}"
        if state == "live":
            assert got.get(entity) == model.held[entity].record, f"{where}: {got.get(entity)} != model"
        elif state == "gone":
            assert entity not in got, f"{where}: read {got[entity]}, the model holds none"
        elif entity in got:
            assert got[entity] == model.held[entity].record, f"{where}: {got[entity]} != model"


def run_sequence(cluster: LocalRedisCluster, seed: int, event: str, background: Background) -> int:
    """One random sequence; returns the number of operations run."""
    rng = random.Random(seed)
    ttl = 2 if seed % 2 else 0
    config = OnlineStoreConfig(
        nodes=[rng.choice(live_addresses(cluster))],
        cluster=True,
        key_ttl_seconds=ttl,
        batch_size=rng.choice([7, 50, 1000]),
    )
    # `store` knows one startup node (which may die, after its client has learned the others);
    # `other` knows them all, and creates its client when it is first used
    every_node = dataclasses.replace(config, nodes=tuple(live_addresses(cluster)))
    model = Model(ttl)
    steps = rng.randint(25, 40) if ttl == 0 else rng.randint(10, 16)
    event_at = {rng.randint(2, steps // 2): "begin", rng.randint(steps // 2 + 1, steps - 2): "end"}
    version = 0
    move: SlotMove | None = None
    reshard: LiveReshard | None = None
    missed_by_scans = 0
    during_reshard = 0
    dead: str | None = None
    with OnlineStore(config) as store, OnlineStore(every_node) as other:
        store.cluster_client()
        for step in range(steps):
            if event != "none" and step in event_at:
                phase = event_at[step]
                log.info("seed %d step %d: %s %s", seed, step, event, phase)
                if event == "migrate" and phase == "begin":
                    move = SlotMove(cluster, rng)
                    move.begin()
                elif event == "migrate":
                    assert move is not None
                    move.finish()
                    move = None
                elif event == "reshard" and phase == "begin":
                    reshard = LiveReshard(cluster, rng, rng.randint(200, 1500))
                elif event == "reshard":
                    assert reshard is not None
                    reshard.finish(cluster)
                    reshard = None
                elif event == "failover" and phase == "begin":
                    failover(cluster, rng)
                elif event == "kill" and phase == "begin":
                    background.outage.set()
                    dead = kill_primary(cluster, rng, background.lock)
                    background.end_outage(promoted=time.monotonic())
                elif event == "kill" and dead is not None:
                    restart(cluster, dead)
                    dead = None
            if ttl:
                wait_out_unsure(model, 1.0)
            client = rng.choice([store, other])
            resharding = reshard is not None and reshard.running()
            during_reshard += resharding
            action = rng.choices(
                ["publish", "read", "count", "delete", "expire"], [5, 4, 1, 1, 1 if ttl else 0]
            )[0]
            if action == "publish":
                day = rng.choice(DATES)
                hot = rng.random() < 0.5
                pool = [e for names in HOT.values() for e in names] if hot else ENTITIES
                ids = set(rng.sample(pool, rng.randint(0, len(pool))))
                records = []
                for entity in sorted(ids, key=lambda _: rng.random()):
                    version += 1
                    records.append((entity, FeatureRecord(day, {"v": version, "seed": seed})))
                    if rng.random() < 0.05:  # one entity twice in a write: the one given last wins
                        version += 1
                        records.append((entity, FeatureRecord(day, {"v": version, "seed": seed})))
                start = time.monotonic()
                report = client.replace_date(VIEW, day, records, sorted(ids))
                end = time.monotonic()
                model.forget_expired(start)
                # keys that may have expired during the write: it may not have counted them removed
                unsure = set(model.unsure(start, end))
                written, removed, maybe_written = model.publish(day, records, ids, start, end)
                doubled = len(records) - len(ids)
                assert report.written + report.kept_newer == len(records), (seed, step, report)
                assert written <= report.written <= written + doubled + len(maybe_written), (
                    seed,
                    step,
                    report,
                    written,
                )
                if maybe_written:
                    model.settle(client.read(VIEW, list(maybe_written)), maybe_written, start, end)
                if resharding:
                    # a SCAN may miss a key that the reshard moves meanwhile (docs/online-store.md):
                    # such a key still holds its record of the date, and nothing else
                    kept = client.read(VIEW, list(removed))
                    assert all(kept[e] == removed[e].record for e in kept), (seed, step, kept)
                    assert report.removed_stale + len(kept) == len(removed), (seed, step, report, kept)
                    model.held.update({e: removed[e] for e in kept})
                    missed_by_scans += len(kept)
                else:
                    maybe_removed = len(unsure & removed.keys())
                    assert len(removed) - maybe_removed <= report.removed_stale <= len(removed), (
                        seed,
                        step,
                        day,
                        report,
                        removed,
                    )
            elif action == "read":
                ids = rng.sample(ENTITIES, rng.randint(1, len(ENTITIES))) + rng.sample(ABSENT, 3)
                check_read(client, model, ids, seed, step)
            elif action == "count" and not resharding:
                start = time.monotonic()
                counted = sum(client.count_keys(VIEW).values())
                live, maybe = model.live_between(list(model.held), start, time.monotonic())
                assert live <= counted <= live + maybe, (seed, step, counted, live, maybe)
            elif action == "delete":
                ids = rng.sample(ENTITIES, rng.randint(0, 30))
                start = time.monotonic()
                deleted = client.delete(VIEW, ids)
                live, maybe = model.live_between(ids, start, time.monotonic())
                for entity in ids:
                    model.held.pop(entity, None)
                assert live <= deleted <= live + maybe, (seed, step, deleted, live, maybe)
            elif action == "expire":
                time.sleep(ttl + TTL_SLACK + 0.05)
        if move is not None:
            move.finish()
        if reshard is not None:
            reshard.finish(cluster)
        if dead is not None:
            restart(cluster, dead)
        if ttl:
            wait_out_unsure(model, 1.0)
        check_read(store, model, ENTITIES, seed, steps)
        start = time.monotonic()
        counted = sum(store.count_keys(VIEW).values())
        live, maybe = model.live_between(list(model.held), start, time.monotonic())
        assert live <= counted <= live + maybe, (seed, counted, live, maybe)
    log.info(
        "seed %d (%s, ttl %d): %d steps, %d during a live reshard, %d records a removal's SCAN missed",
        seed,
        event,
        ttl,
        steps,
        during_reshard,
        missed_by_scans,
    )
    return steps


def test_random_sequences_on_a_cluster_match_the_model(cluster: LocalRedisCluster) -> None:
    stable = OnlineStoreConfig(nodes=cluster.addresses[:1], cluster=True, key_ttl_seconds=0, batch_size=100)
    operations = 0
    with Background(stable) as background:
        for n in range(SEQUENCES):
            seed = FIRST_SEED + n
            for address, _ in topology(cluster)[0].items():
                with redis_client(address) as client:
                    for key in client.scan_iter(match=f"{DEFAULT_KEY_PREFIX}:{VIEW}:*", count=1000):
                        client.delete(key)
            operations += run_sequence(cluster, seed, EVENTS[seed % len(EVENTS)], background)
    log.info(
        "%d sequences, %d operations; background: %d writes, %d reads, %d counts, %d errors during outages",
        SEQUENCES,
        operations,
        background.writes,
        background.reads,
        background.counts,
        len(background.errors),
    )
    assert not background.problems, background.problems[:10]
    assert background.writes > 0 and background.reads > 0


@pytest.fixture(scope="module")
def small_cluster() -> Iterator[LocalRedisCluster]:
    """3 primaries, no replicas: for the tests that change the cluster's nodes or slots."""
    with LocalRedisCluster(primaries=3) as started:
        yield started


def test_a_write_retries_a_node_that_answers_clusterdown_for_a_moment(
    small_cluster: LocalRedisCluster,
) -> None:
    """A node that has not learned the cluster's current state yet (a failover, a node restarting)
    answers CLUSTERDOWN for a moment; redis-py's own commands wait, reload the slot table and try
    again. The write script, pipelined per primary, must do the same rather than fail the write.
    Here the slot's primary gives up the slot (CLUSTER DELSLOTS) until it has answered a command
    with CLUSTERDOWN, then takes it back (ADDSLOTS)."""
    entity = "down0001"
    key = feature_key(DEFAULT_KEY_PREFIX, VIEW, entity)
    slot = key_slot(key)
    primary = owner_of_slot(small_cluster.addresses[0], slot)
    with OnlineStore(OnlineStoreConfig(nodes=small_cluster.addresses[:1], cluster=True)) as store:
        assert store.write(VIEW, [(entity, FeatureRecord("2026-10-27", {"n": 1}))]).written == 1
        with slot_given_up_for_a_moment(primary, slot):
            report = store.write(VIEW, [(entity, FeatureRecord("2026-10-28", {"n": 2}))])
        assert (report.written, report.redirected) == (1, 1), report
        with slot_given_up_for_a_moment(primary, slot):
            assert store.read(VIEW, [entity])[entity] == FeatureRecord("2026-10-28", {"n": 2})
        with slot_given_up_for_a_moment(primary, slot):
            assert store.delete(VIEW, [entity]) == 1


@contextmanager
def slot_given_up_for_a_moment(primary: str, slot: int) -> Iterator[None]:
    """`primary` answers CLUSTERDOWN for `slot` (CLUSTER DELSLOTS) until it has answered one
    command so (its INFO errorstats count it), then takes the slot back (ADDSLOTS). Not after a
    fixed time: a test thread that the machine stalls longer would then never meet the error."""

    def clusterdown_answers(client: redis.Redis) -> int:
        return int(client.info("errorstats").get("errorstat_CLUSTERDOWN", {}).get("count", 0))

    def take_back() -> None:
        with redis_client(primary) as client:
            deadline = time.monotonic() + 30
            while clusterdown_answers(client) == before and time.monotonic() < deadline:
                time.sleep(0.005)
            client.execute_command("CLUSTER", "ADDSLOTS", slot)

    with redis_client(primary) as client:
        before = clusterdown_answers(client)
        client.execute_command("CLUSTER", "DELSLOTS", slot)
    back = threading.Thread(target=take_back)
    back.start()
    try:
        yield
    finally:
        back.join()


def test_a_removal_and_a_count_reach_a_primary_added_after_the_client_loaded_its_slot_table(
    small_cluster: LocalRedisCluster,
) -> None:
    """A store that has read before a node joined the cluster (a long-lived reader or evicter):
    `remove_stale` must still find the stale records that the reshard moved onto the new primary,
    and `count_keys` must count them, although nothing has redirected this client there yet."""
    entities = [f"n{i:05d}" for i in range(3000)]
    day = "2026-10-28"
    small = small_cluster
    with (
        LocalRedisServer(cluster=True) as new_node,
        OnlineStore(OnlineStoreConfig(nodes=small.addresses[:1], cluster=True, batch_size=500)) as store,
        OnlineStore(OnlineStoreConfig(nodes=small.addresses[:1], cluster=True, batch_size=500)) as reader,
    ):
        store.write(VIEW, [(e, FeatureRecord(day, {"e": e})) for e in entities])
        assert sum(store.count_keys(VIEW).values()) == 3000  # the client's slot table is loaded
        assert len(reader.read(VIEW, entities)) == 3000
        added = subprocess.run(
            ["redis-cli", "--cluster", "add-node", new_node.address, small.addresses[0]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stdout[-2000:] + added.stderr
        with redis_client(new_node.address) as client:
            new_id = client.execute_command("CLUSTER", "MYID").decode()
        everyone = [*small.addresses, new_node.address]
        wait_for(lambda: all(knows(a, new_id) for a in everyone), "every node learns of the new one")
        command = ["redis-cli", "--cluster", "reshard", small.addresses[0], "--cluster-from", "all"]
        command += ["--cluster-to", new_id, "--cluster-slots", "300", "--cluster-yes"]
        reshard = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert reshard.returncode == 0, reshard.stdout[-2000:] + reshard.stderr
        with redis_client(new_node.address) as client:
            on_new_node = client.dbsize()
        assert on_new_node > 20, on_new_node

        # A client that only reads follows MOVED to the new node
        assert len(reader.read(VIEW, entities)) == 3000
        # Before the fix: 3000 - on_new_node, as the client knew only the first three primaries
        assert sum(store.count_keys(VIEW).values()) == 3000
        # A rerun of the date that no longer holds any entity: every record of it goes
        assert store.replace_date(VIEW, day, [], []).removed_stale == 3000
        assert store.read(VIEW, entities) == {}


def test_threads_that_share_a_new_store_create_one_cluster_client(
    cluster: LocalRedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads share one store (the layered cache's readers do). Their first reads meet at once:
    one cluster client must serve them all, rather than each thread building its own (loading the
    slot table and connecting again), all but one then dropped. The client's construction is
    slowed by 0.2 s so that the first reads meet every time."""
    import featurelake.online_store as online_store

    built: list[RedisCluster] = []

    class SlowRedisCluster(RedisCluster):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            time.sleep(0.2)
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(online_store, "RedisCluster", SlowRedisCluster)
    wait_for(lambda: settled(cluster), "the cluster settles", cluster=cluster)
    start = threading.Barrier(8)
    failures: list[BaseException] = []
    with OnlineStore(OnlineStoreConfig(nodes=live_addresses(cluster)[:1], cluster=True)) as store:

        def first_read() -> None:
            try:
                start.wait()
                assert store.read(VIEW, ["x", "y", "z"]) == {}
            except BaseException as error:  # reported below
                failures.append(error)

        threads = [threading.Thread(target=first_read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, failures
    assert len(built) == 1, f"{len(built)} cluster clients built for one store"
