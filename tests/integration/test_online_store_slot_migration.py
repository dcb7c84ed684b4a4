"""The online store on a real 3-primary Redis Cluster while the cluster moves slots: writes and reads
that meet ASK (a slot half migrated) and MOVED (a slot moved after the client cached the slot
table) lose nothing; a live `redis-cli --cluster reshard` under a writer and a reader loses no key
and no newer record; the Airflow publish task, configured by its connection alone, publishes
during a reshard; a node added to the cluster gets its keys from a client that predates it; and
failovers (manual, and after a primary dies) are followed too. Its own module, so its own cluster: the slots
and nodes it adds stay."""

from __future__ import annotations

import contextlib
import logging
import math
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from redis.crc import key_slot
from redis.exceptions import ClusterError, ResponseError, TryAgainError

from featurelake.feature_records import FeatureRecord, feature_key
from featurelake.local_redis import LocalRedisCluster, LocalRedisServer
from featurelake.online_store import DEFAULT_KEY_PREFIX, OnlineStore, OnlineStoreConfig
from tests.support import redis_client

pytestmark = pytest.mark.integration

VIEW = "user_features"
# The live reshard counts its own keys, apart from those the first test leaves in the cluster
RESHARD_VIEW = "user_features_reshard"


def node_id(address: str) -> str:
    with redis_client(address) as client:
        return client.execute_command("CLUSTER", "MYID").decode()


def owner_of_slot(addresses: list[str], slot: int) -> str:
    with redis_client(addresses[0]) as client:
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return f"{primary[0].decode()}:{primary[1]}"
    raise AssertionError(f"slot {slot} has no owner")


def entities_in_slot(slot: int, count: int, prefix: str) -> list[str]:
    found = []
    for i in range(2_000_000):
        entity = f"{prefix}{i:07d}"
        if key_slot(feature_key(DEFAULT_KEY_PREFIX, VIEW, entity)) == slot:
            found.append(entity)
            if len(found) == count:
                return found
    raise AssertionError(f"fewer than {count} entities in slot {slot}")


def wait_until_every_node_knows(
    addresses: list[str], new_id: str, *, count: int, timeout: float = 30
) -> None:
    """Wait until every node lists `new_id` among `count` connected nodes and has cluster state ok
    (the cluster bus gossips a node added with `redis-cli --cluster add-node`; a reshard started
    earlier fails half done, with CLUSTERDOWN from the new node)."""
    deadline = time.monotonic() + timeout
    while True:
        views = []
        for address in addresses:
            with redis_client(address) as client:
                state = client.cluster("info").get("cluster_state")
                views.append(f"{state}\n" + client.execute_command("CLUSTER", "NODES").decode())
        if all(
            view.startswith("ok") and new_id in view and view.count(" connected") == count for view in views
        ):
            return
        assert time.monotonic() < deadline, f"the nodes did not all learn of {new_id} in {timeout} s: {views}"
        time.sleep(0.2)


def dated(entities: list[str], day: date) -> list[tuple[str, FeatureRecord]]:
    """One record per entity, dated `day`."""
    return [(entity, FeatureRecord(day.isoformat(), {"entity": entity})) for entity in entities]


def test_writes_and_reads_follow_ask_and_moved_while_a_slot_migrates(
    redis_cluster: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    background = [f"u{i:06d}" for i in range(3000)]
    slot = key_slot(feature_key(DEFAULT_KEY_PREFIX, VIEW, "s0000000"))
    in_slot = entities_in_slot(slot, 12, "s")
    new_in_slot = entities_in_slot(slot, 12, "n")
    source = owner_of_slot(redis_cluster, slot)
    target = next(address for address in redis_cluster if address != source)
    day = date(2026, 10, 28)
    keys_in_slot = [feature_key(DEFAULT_KEY_PREFIX, VIEW, e) for e in in_slot]

    with OnlineStore(OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True, batch_size=500)) as store:
        assert store.write(VIEW, dated(background + in_slot, day)).written == 3012

        # Half the slot's keys move to the target; the slot stays MIGRATING on the source. The
        # store's cached slot table still names the source.
        with redis_client(source) as src, redis_client(target) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
            host, port = target.rsplit(":", 1)
            src.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *keys_in_slot[:6])
            assert src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 6

            # Keys still on the source, keys already moved (ASK), and new keys (ASK)
            report = store.write(VIEW, dated(in_slot + new_in_slot, day + timedelta(days=1)))
            assert (report.written, report.kept_newer, report.redirected) == (24, 0, 18)
            # An older record is still refused on both sides of the migration
            report = store.write(VIEW, dated(in_slot, day))
            assert (report.written, report.kept_newer, report.redirected) == (0, 12, 6)
            # The slot's keys are split between two nodes: an MGET of them gets TRYAGAIN until the
            # move ends, so the store reads that batch again with one GET per key
            with pytest.raises((TryAgainError, ClusterError)):
                store.cluster_client().mget_nonatomic(keys_in_slot)
            with caplog.at_level(logging.INFO, logger="featurelake.online_store"):
                got = store.read(VIEW, background + in_slot + new_in_slot)
            assert "reading its 24 keys one by one" in caplog.text
            assert len(got) == 3024
            assert {got[e].feature_date for e in in_slot + new_in_slot} == {"2026-10-29"}
            assert all(got[e].feature_date == "2026-10-28" for e in background)

            # Finish the move: the rest of the slot's keys, then every node learns the new owner.
            rest = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
            src.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *rest)
            for address in redis_cluster:
                with redis_client(address) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(target))
            assert src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
            assert dst.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 24

        # The same store, whose slot table still names the source: MOVED
        report = store.write(VIEW, dated(in_slot + new_in_slot, day + timedelta(days=2)))
        assert (report.written, report.kept_newer, report.redirected) == (24, 0, 24)
        # MOVED updated the slot table: the next write goes straight to the target
        assert store.write(VIEW, dated(in_slot, day + timedelta(days=3))).redirected == 0
        got = store.read(VIEW, background + in_slot + new_in_slot)
        assert len(got) == 3024
        assert {got[e].feature_date for e in in_slot} == {"2026-10-31"}
        assert {got[e].feature_date for e in new_in_slot} == {"2026-10-30"}
        assert sum(store.count_keys(VIEW).values()) == 3024
    assert owner_of_slot(redis_cluster, slot) == target


def test_a_live_reshard_loses_no_key_and_no_newer_record(redis_cluster: list[str]) -> None:
    entities = [f"r{i:06d}" for i in range(6000)]
    first_day = date(2026, 11, 1)
    config = OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True, batch_size=500)
    with OnlineStore(config) as store:
        store.write(RESHARD_VIEW, dated(entities, first_day))
        counts_before = store.count_keys(RESHARD_VIEW)
    source = max(counts_before, key=counts_before.get)
    target = next(address for address in redis_cluster if address != source)

    stop = threading.Event()
    failures: list[BaseException] = []
    # The latest day whose write has returned; a read must never see an older record than that.
    written = {"day": first_day, "redirected": 0}
    reads = {"passes": 0}

    def write_days() -> None:
        try:
            with OnlineStore(config) as writer:
                day = first_day
                while not stop.is_set():
                    day += timedelta(days=1)
                    report = writer.write(RESHARD_VIEW, dated(entities, day))
                    assert report.written == len(entities), report
                    written["day"] = day
                    written["redirected"] += report.redirected
        except BaseException as error:  # reported by the test thread
            failures.append(error)

    def read_all() -> None:
        try:
            with OnlineStore(config) as reader:
                while not stop.is_set():
                    floor = written["day"]
                    got = reader.read(RESHARD_VIEW, entities)
                    assert len(got) == len(entities), f"{len(entities) - len(got)} keys missing"
                    oldest = min(record.feature_date for record in got.values())
                    assert oldest >= floor.isoformat(), (oldest, floor)
                    reads["passes"] += 1
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=write_days), threading.Thread(target=read_all)]
    for thread in threads:
        thread.start()
    try:
        reshard = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "reshard",
                source,
                "--cluster-from",
                node_id(source),
                "--cluster-to",
                node_id(target),
                "--cluster-slots",
                "2000",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert reshard.returncode == 0, reshard.stdout[-2000:] + reshard.stderr
    assert not failures, failures[0]
    # Both ran during the reshard, and the writer met slots on the move
    assert reads["passes"] > 0 and written["redirected"] > 0, (reads, written)

    with OnlineStore(config) as store:
        last = written["day"].isoformat()
        got = store.read(RESHARD_VIEW, entities)
        counts_after = store.count_keys(RESHARD_VIEW)
    assert len(got) == len(entities)
    assert {record.feature_date for record in got.values()} == {last}
    assert sum(counts_after.values()) == len(entities)
    # The keys followed the 2,000 slots: the source lost about 2000/16384 of all keys to the target
    moved = counts_before[source] - counts_after[source]
    assert moved > 0 and counts_after[target] - counts_before[target] == moved


def test_the_publish_task_writes_to_a_cluster_named_by_its_connection_during_a_reshard(
    redis_cluster: list[str], tmp_path, monkeypatch
) -> None:
    """The Airflow task, configured by the connection alone, publishes a feature partition again
    and again while `redis-cli --cluster reshard` moves slots (and at least twice: a rerun writes
    every row again); every run writes every row, one at least meets moving slots, and the store
    then holds the partition."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurelake_airflow.operators.publish_online_features import PublishOnlineFeaturesOperator

    users = [f"p{i:06d}" for i in range(5000)]
    partition = tmp_path / "features" / "user_features" / "date=2026-10-28"
    partition.mkdir(parents=True)
    features = {
        "user_id": users,
        "total_spend": [i * 0.25 for i in range(5000)],
        "transaction_count": list(range(5000)),
    }
    pq.write_table(pa.table(features), partition / "part-00000.parquet")
    host, port = redis_cluster[0].rsplit(":", 1)
    connection = {"conn_type": "redis", "host": host, "port": int(port), "extra": {"cluster": True}}
    monkeypatch.setenv("AIRFLOW_CONN_FEATURELAKE_ONLINE", json.dumps(connection))

    config = OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True)
    with OnlineStore(config) as store:
        store.write("warm", dated(users, date(2026, 1, 1)))  # keys spread over the slots
        counts = store.count_keys("warm")
    source = max(counts, key=counts.get)
    target = next(address for address in redis_cluster if address != source)
    command = ["redis-cli", "--cluster", "reshard", source, "--cluster-from", node_id(source)]
    command += ["--cluster-to", node_id(target), "--cluster-slots", "1500", "--cluster-yes"]
    results = []
    log_path = tmp_path / "reshard.log"
    # redis-cli's output goes to a file: a pipe that nobody reads would fill up and stop it
    with (
        log_path.open("w") as log_file,
        subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT) as reshard,
    ):
        # at least two runs (a rerun writes every row again), whenever the reshard ends
        while reshard.poll() is None or len(results) < 2:
            publish = PublishOnlineFeaturesOperator(task_id="publish", lake=str(tmp_path), ds="2026-10-28")
            results.append(publish.execute(context={}))
    assert reshard.returncode == 0, log_path.read_text()[-2000:]
    assert all((r["written"], r["kept_newer"]) == (5000, 0) for r in results), results
    assert sum(r["redirected"] for r in results) > 0, results

    with OnlineStore(config) as store:
        got = store.read("user_features", users)
    assert len(got) == 5000 and got["p000004"].values == {"total_spend": 1.0, "transaction_count": 4}
    assert {record.feature_date for record in got.values()} == {"2026-10-28"}


def test_a_node_added_to_the_cluster_gets_its_keys_from_a_client_that_predates_it(
    redis_cluster: list[str],
) -> None:
    """`redis-cli --cluster add-node`, then slots resharded onto the new node: a store whose client
    was created before the node existed learns of it from MOVED and writes to it directly next."""
    entities = [f"a{i:06d}" for i in range(4000)]
    with (
        LocalRedisServer(cluster=True) as new_node,
        OnlineStore(OnlineStoreConfig(nodes=redis_cluster[:1], cluster=True, batch_size=500)) as store,
    ):
        assert store.write(RESHARD_VIEW, dated(entities, date(2026, 11, 1))).written == 4000
        added = subprocess.run(
            ["redis-cli", "--cluster", "add-node", new_node.address, redis_cluster[0]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stdout[-2000:] + added.stderr
        new_id = node_id(new_node.address)
        wait_until_every_node_knows([*redis_cluster, new_node.address], new_id, count=4)
        command = ["redis-cli", "--cluster", "reshard", redis_cluster[0], "--cluster-from", "all"]
        command += ["--cluster-to", new_id, "--cluster-slots", "3000", "--cluster-yes"]
        reshard = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert reshard.returncode == 0, reshard.stdout[-2000:] + reshard.stderr

        first = store.write(RESHARD_VIEW, dated(entities, date(2026, 11, 2)))
        second = store.write(RESHARD_VIEW, dated(entities, date(2026, 11, 3)))
        got = store.read(RESHARD_VIEW, entities)
        per_primary = store.count_keys(RESHARD_VIEW)
    assert first.written == second.written == 4000
    # The first write met MOVED for the moved slots; by the second, the client knew the new owner
    assert first.redirected > 0 and second.redirected == 0, (first, second)
    assert {record.feature_date for record in got.values()} == {"2026-11-03"} and len(got) == 4000
    assert per_primary[new_node.address] > 400, per_primary


@pytest.fixture(scope="module")
def replicated_cluster() -> Iterator[LocalRedisCluster]:
    """A real Redis Cluster of 3 primaries with a replica each, which fails a node over after it
    has been unreachable for 1 s (Redis' default is 15 s)."""
    with LocalRedisCluster(primaries=3, replicas=1, node_timeout_ms=1000) as cluster:
        yield cluster


def role(address: str) -> str:
    with redis_client(address) as client:
        return client.execute_command("ROLE")[0].decode()


def a_primary_and_its_replica(addresses: list[str]) -> tuple[str, str]:
    """A primary other than addresses[0] (which the tests ask), and its replica."""
    with redis_client(addresses[0]) as client:
        nodes = [line.split() for line in client.execute_command("CLUSTER", "NODES").decode().splitlines()]
    address_of = {fields[0]: fields[1].split("@")[0] for fields in nodes}
    for fields in nodes:
        if "slave" in fields[2].split(",") and address_of[fields[3]] != addresses[0]:
            return address_of[fields[3]], address_of[fields[0]]
    raise AssertionError(f"no replica of a primary other than {addresses[0]} in {nodes}")


def test_writes_and_reads_go_on_through_a_manual_failover(replicated_cluster: LocalRedisCluster) -> None:
    """`CLUSTER FAILOVER` on a replica swaps it with its primary (as for an upgrade). The store's
    client still maps the slots to the old primary, now a replica, which answers MOVED."""
    entities = [f"f{i:06d}" for i in range(5000)]
    addresses = replicated_cluster.addresses
    primary, replica = a_primary_and_its_replica(addresses)
    with OnlineStore(OnlineStoreConfig(nodes=addresses[:1], cluster=True, batch_size=500)) as store:
        assert store.write(VIEW, dated(entities, date(2026, 11, 1))).written == 5000
        # Redis gives a manual failover 5 s for the replica to catch up, then drops it without a
        # word; on a loaded machine that can pass, so the request is repeated until the roles swap.
        deadline = time.monotonic() + 120
        asked_at = -math.inf
        with redis_client(replica) as client:
            while (role(replica), role(primary)) != ("master", "slave"):
                assert time.monotonic() < deadline, "the failover did not finish in 120 s"
                if time.monotonic() - asked_at > 10:
                    with contextlib.suppress(ResponseError):  # it became a primary meanwhile
                        client.execute_command("CLUSTER", "FAILOVER")
                    asked_at = time.monotonic()
                time.sleep(0.1)

        report = store.write(VIEW, dated(entities, date(2026, 11, 2)))
        got = store.read(VIEW, entities)
        per_primary = store.count_keys(VIEW)
    assert (report.written, report.kept_newer) == (5000, 0) and report.redirected > 0, report
    assert len(got) == 5000 and {record.feature_date for record in got.values()} == {"2026-11-02"}
    # The promoted replica serves the old primary's keys, and the old primary is no longer asked
    assert per_primary.get(replica, 0) > 1000 and primary not in per_primary, per_primary


def test_writes_go_on_after_a_primary_dies_and_its_replica_takes_over(
    replicated_cluster: LocalRedisCluster,
) -> None:
    """A primary's process dies; after the node timeout the cluster promotes its replica. A store
    whose client still maps the slots to the dead primary writes every record on its next call."""
    entities = [f"k{i:06d}" for i in range(3000)]
    addresses = replicated_cluster.addresses
    primary, replica = a_primary_and_its_replica(addresses)
    with OnlineStore(OnlineStoreConfig(nodes=addresses[:1], cluster=True, batch_size=500)) as store:
        assert store.write(VIEW, dated(entities, date(2026, 11, 5))).written == 3000
        replicated_cluster.server(primary).stop()
        deadline = time.monotonic() + 60
        with redis_client(addresses[0]) as survivor:
            while role(replica) != "master" or survivor.cluster("info").get("cluster_state") != "ok":
                assert time.monotonic() < deadline, "the cluster did not promote the replica in 60 s"
                time.sleep(0.2)

        report = store.write(VIEW, dated(entities, date(2026, 11, 6)))
        got = store.read(VIEW, entities)
    assert (report.written, report.kept_newer) == (3000, 0) and report.redirected > 0, report
    assert len(got) == 3000 and {record.feature_date for record in got.values()} == {"2026-11-06"}


def _kill_a_primary_and_wait_for_its_replica(cluster: LocalRedisCluster) -> None:
    """Stop a live primary other than addresses[0] that has a live replica; wait until the
    cluster has promoted that replica."""
    with redis_client(cluster.addresses[0]) as client:
        nodes = [line.split() for line in client.execute_command("CLUSTER", "NODES").decode().splitlines()]
    live = {fields[0]: fields[1].split("@")[0] for fields in nodes if "fail" not in fields[2]}
    primary, replica = next(
        (live[fields[3]], live[fields[0]])
        for fields in nodes
        if "slave" in fields[2].split(",") and fields[0] in live and fields[3] in live
        if live[fields[3]] != cluster.addresses[0]
    )
    cluster.server(primary).stop()
    deadline = time.monotonic() + 60
    with redis_client(cluster.addresses[0]) as survivor:
        while role(replica) != "master" or survivor.cluster("info").get("cluster_state") != "ok":
            assert time.monotonic() < deadline, "the cluster did not promote the replica in 60 s"
            time.sleep(0.2)


def test_a_read_or_a_delete_after_a_primary_dies_does_not_fail() -> None:
    """A client that does not write (the layered cache's reader, or an eviction) whose slot table
    still names a primary that died: its first read after the cluster promoted the replica gets
    every key, and its first delete deletes every key, as a write does, rather than failing once
    with a ConnectionError; so do a count and a removal of stale records by other such clients. Its
    own cluster, so that the module's replicated cluster keeps its pairs for the tests above; two
    primaries die in turn, each after the majority promoted the replica of the one before."""
    entities = [f"r{i:06d}" for i in range(3000)]
    config = {"cluster": True, "batch_size": 500}
    with (
        LocalRedisCluster(primaries=3, replicas=1, node_timeout_ms=1000) as cluster,
        OnlineStore(OnlineStoreConfig(nodes=cluster.addresses[:1], **config)) as store,
        OnlineStore(OnlineStoreConfig(nodes=cluster.addresses[:1], **config)) as counter,
        OnlineStore(OnlineStoreConfig(nodes=cluster.addresses[:1], **config)) as remover,
    ):
        assert store.write(VIEW, dated(entities, date(2026, 11, 7))).written == 3000
        for client in (store, counter, remover):  # each client's slot table is loaded
            assert len(client.read(VIEW, entities[:10])) == 10
        _kill_a_primary_and_wait_for_its_replica(cluster)
        got = store.read(VIEW, entities)
        assert len(got) == 3000 and {record.feature_date for record in got.values()} == {"2026-11-07"}
        # SCAN names its node: the table is reloaded, not the dead primary asked again
        assert sum(counter.count_keys(VIEW).values()) == 3000
        assert remover.remove_stale(VIEW, date(2026, 11, 7), entities[500:]) == 500
        entities = entities[500:]

        _kill_a_primary_and_wait_for_its_replica(cluster)
        assert store.delete(VIEW, entities[:2000]) == 2000
        assert sorted(store.read(VIEW, entities)) == entities[2000:]
