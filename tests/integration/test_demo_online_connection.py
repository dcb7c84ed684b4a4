"""The demo's `--online-conn` in either form an AIRFLOW_CONN_ variable takes (JSON, or a URI such as
redis://127.0.0.1:6379/0), read at the end of the demo as the run's tasks read the variable; a value
neither form reads fails before the DAG runs, not after."""

from __future__ import annotations

import pytest

from featurelake.local_redis import LocalRedisServer
from featurelake.online_store import OnlineStoreConfig
from featurelake_airflow import demo
from tests.integration.test_demo_online_reads import (
    DAY,
    USERS,
    assert_the_evicted_users_were_computed,
    publish,
)

pytestmark = pytest.mark.integration


def test_the_demo_reads_through_a_uri_connection(tmp_path, capsys) -> None:
    with LocalRedisServer() as server:
        publish(tmp_path, OnlineStoreConfig(nodes=(server.address,), db=3))
        demo.show_online_reads(USERS, f"redis://127.0.0.1:{server.port}/3", lake=tmp_path, day=DAY)
    assert_the_evicted_users_were_computed(capsys.readouterr().out)


@pytest.mark.parametrize(
    "value", ['{"conn_type": "redis", "host": ', "redis://127.0.0.1:port/0"], ids=["json", "uri"]
)
def test_a_connection_the_reads_cannot_take_fails_before_the_run(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # A lake the demo refuses at once: were the value taken, the demo would stop there instead.
    monkeypatch.setenv("AIRFLOW_VAR_FEATURELAKE_LAKE", "s3://bucket/lake")
    with pytest.raises(SystemExit) as stopped:
        demo.main(["--date", DAY.isoformat(), "--online-conn", value])
    assert stopped.value.code == 2
    assert "--online-conn: not a Redis connection as JSON or a URI" in capsys.readouterr().err
