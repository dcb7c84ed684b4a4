"""The consistent-hash ring that places online-store keys on Redis shards.

A ketama ring (uhashring with `hash_fn="ketama"`: md5, 160 points per node, the libketama layout that
twemproxy and other ketama clients share), so adding a node to N moves about 1/(N+1) of the keys and
removing one moves only that node's keys. Nodes are named by their `host:port`, and the name is what
is hashed: the same names give the same placement in every client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from uhashring import HashRing

K = TypeVar("K", str, bytes)


class ShardRing:
    """A ketama ring over named nodes; `node_for` and `group_by_node` place keys."""

    def __init__(self, nodes: Iterable[str]) -> None:
        if isinstance(nodes, (str, bytes)):
            raise TypeError(
                f"a shard ring takes a list of host:port names, got the string {nodes!r}; "
                f"pass [{nodes!r}] for a ring of one node"
            )
        names = list(nodes)
        if not names:
            raise ValueError("a shard ring needs at least one node; list them as host:port")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"shard ring nodes must be unique; {duplicates} appear more than once")
        self.nodes: tuple[str, ...] = tuple(names)
        self._ring = HashRing(nodes=names, hash_fn="ketama")

    def node_for(self, key: str | bytes) -> str:
        """The node that owns `key` (bytes are read as UTF-8, as featurelake writes its keys)."""
        if isinstance(key, bytes):
            try:
                key = key.decode()
            except UnicodeDecodeError:
                raise ValueError(
                    f"key {key!r} is not UTF-8 text, so the ring cannot place it (featurelake writes "
                    "only UTF-8 keys): delete it if nothing else needs it, or give featurelake its own "
                    "key_prefix"
                ) from None
        return self._ring.get_node(key)

    def group_by_node(self, keys: Iterable[K]) -> dict[str, list[K]]:
        """`keys` grouped by owning node, each group in the input's order."""
        groups: dict[str, list[K]] = {}
        for key in keys:
            groups.setdefault(self.node_for(key), []).append(key)
        return groups

    def __repr__(self) -> str:
        return f"ShardRing({list(self.nodes)!r})"
