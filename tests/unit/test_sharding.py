"""The ketama ring: placement pinned to exact nodes, and the share of keys that move."""

from __future__ import annotations

import bisect
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurelake.sharding import ShardRing

NODES = ["redis-0:6379", "redis-1:6379", "redis-2:6379"]


def test_placement_is_pinned() -> None:
    """The same node names place keys the same way in every client and release."""
    ring = ShardRing(NODES)
    assert {k: ring.node_for(f"fl:user_features:{k}") for k in ("u1", "u2", "u3", "u4", "u5")} == {
        "u1": "redis-1:6379",
        "u2": "redis-1:6379",
        "u3": "redis-2:6379",
        "u4": "redis-2:6379",
        "u5": "redis-1:6379",
    }
    assert ring.node_for(b"fl:user_features:u3") == "redis-2:6379"


def _libketama_node_for(nodes: list[str], key: str) -> str:
    """libketama's placement, written from its C source (ketama.c) apart from uhashring: for equal
    weights 40 md5 digests per server of "<name>-<i>", each giving 4 points (its bytes read
    little-endian); a key's point is its md5's first 4 bytes read the same way, and its server the
    first point at or after it, wrapping round."""

    def points(digest: bytes) -> list[int]:
        return [int.from_bytes(digest[4 * h : 4 * h + 4], "little") for h in range(4)]

    ring = sorted(
        (point, node)
        for node in nodes
        for i in range(40)
        for point in points(hashlib.md5(f"{node}-{i}".encode()).digest())
    )
    spot = points(hashlib.md5(key.encode()).digest())[0]
    index = bisect.bisect_left(ring, (spot, ""))
    return ring[index % len(ring)][1]


@pytest.mark.parametrize("nodes", [NODES, [*NODES, "redis-3:6379"], ["10.0.0.5:7000"]])
def test_placement_is_libketamas(nodes: list[str]) -> None:
    """The placements pinned above are not just what uhashring gives today: every key is where
    libketama, and so twemproxy and the other ketama clients, would put it."""
    ring = ShardRing(nodes)
    keys = [f"fl:user_features:u{i:07d}" for i in range(5000)]
    assert [ring.node_for(key) for key in keys] == [_libketama_node_for(nodes, key) for key in keys]


def test_group_by_node_keeps_every_key_once() -> None:
    ring = ShardRing(NODES)
    keys = [f"k{i}" for i in range(3000)]
    groups = ring.group_by_node(keys)
    assert sorted(k for group in groups.values() for k in group) == sorted(keys)
    # each group in the input's order (the docstring's promise, which callers batch by)
    assert all(group == [k for k in keys if ring.node_for(k) == node] for node, group in groups.items())
    assert set(groups) == set(NODES)
    # roughly even: each node holds 20-47% of 3 nodes' keys
    assert all(600 <= len(group) <= 1400 for group in groups.values()), {n: len(g) for n, g in groups.items()}


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        pytest.param([], "at least one node", id="empty"),
        pytest.param(["a:1", "a:1"], "unique", id="duplicate"),
    ],
)
def test_bad_rings_are_refused(nodes: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShardRing(nodes)


@settings(max_examples=25, deadline=None)
@given(node_count=st.integers(min_value=2, max_value=8), seed=st.integers(min_value=0, max_value=10_000))
def test_adding_a_node_moves_about_its_share_and_only_to_it(node_count: int, seed: int) -> None:
    nodes = [f"10.0.{seed % 250}.{i}:6379" for i in range(node_count)]
    before, after = ShardRing(nodes), ShardRing([*nodes, f"10.1.{seed % 250}.99:6379"])
    keys = [f"fl:user_features:{seed}-{i}" for i in range(4000)]
    moved = [k for k in keys if before.node_for(k) != after.node_for(k)]
    assert {after.node_for(k) for k in moved} <= {f"10.1.{seed % 250}.99:6379"}
    share = len(moved) / len(keys)
    expected = 1 / (node_count + 1)
    # ketama with 160 points per node: the share stays within about half of its expectation
    assert 0.5 * expected <= share <= 1.6 * expected, (share, expected)


@settings(max_examples=15, deadline=None)
@given(node_count=st.integers(min_value=3, max_value=8), removed=st.integers(min_value=0, max_value=7))
def test_removing_a_node_moves_only_its_keys(node_count: int, removed: int) -> None:
    nodes = [f"redis-{i}:6379" for i in range(node_count)]
    gone = nodes[removed % node_count]
    before, after = ShardRing(nodes), ShardRing([n for n in nodes if n != gone])
    for i in range(2000):
        key = f"k{i}"
        if before.node_for(key) != gone:
            assert after.node_for(key) == before.node_for(key)


def test_one_node_as_a_string_is_refused_not_split_into_characters() -> None:
    # list("redis-0:6379") is 12 distinct one-character "nodes": a ring that placed keys on none.
    with pytest.raises(TypeError, match=r"list of host:port names, got the string 'redis-0:6379'"):
        ShardRing("redis-0:6379")  # type: ignore[arg-type]


def test_a_key_that_is_no_utf8_text_is_named_not_a_decode_error() -> None:
    # SCAN of fl:* on a shared server can return another program's key; the ring hashes text
    ring = ShardRing(["redis-0:6379", "redis-1:6379"])
    with pytest.raises(ValueError, match=r"key b'fl:user_features:\\xff' is not UTF-8.*key_prefix"):
        ring.node_for(b"fl:user_features:\xff")
