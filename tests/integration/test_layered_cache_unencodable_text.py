"""Text UTF-8 cannot encode (a lone surrogate, as bytes decoded with errors="surrogateescape"
give) through the layered cache over real Redis servers, in a computed record or in an entity id:
the call fails naming the id (and the column), and nothing of it is written."""

from __future__ import annotations

import pytest

from featurelake.cache import LayeredFeatureCache
from featurelake.feature_records import FeatureRecord
from featurelake.online_store import OnlineStore, OnlineStoreConfig
from tests.support import keys_on

pytestmark = pytest.mark.integration

VIEW = "user_features"


def test_computed_text_that_utf8_cannot_encode_names_the_id_and_column(redis_nodes: list[str]) -> None:
    # It failed with msgpack's bare UnicodeEncodeError, which named neither.
    def compute(ids):
        return {entity: FeatureRecord("2026-10-28", {"ok": 1, "city": "caf\udce9"}) for entity in ids}

    with OnlineStore(OnlineStoreConfig(nodes=redis_nodes[:2])) as store:
        cache = LayeredFeatureCache(view=VIEW, store=store, compute=compute)
        with pytest.raises(
            ValueError, match=r"compute gave entity 'u-1' of view 'user_features' .* feature column 'city'"
        ):
            cache.get_many(["u-1"])
        assert len(cache) == 0
        assert set().union(*(keys_on(node) for node in store.config.nodes)) == set()


def test_an_entity_id_that_utf8_cannot_encode_is_named(redis_nodes: list[str]) -> None:
    # It failed with a bare UnicodeEncodeError from the key's encoding, naming neither id nor view.
    with OnlineStore(OnlineStoreConfig(nodes=redis_nodes[:2])) as store:
        cache = LayeredFeatureCache(view=VIEW, store=store, compute=lambda ids: {})
        with pytest.raises(ValueError, match=r"entity id 'caf\\udce9' of view 'user_features'"):
            cache.get_many(["u-1", "caf\udce9"])
        with pytest.raises(ValueError, match=r"entity id 'caf\\udce9' of view 'user_features'"):
            store.read(VIEW, ["caf\udce9"])
