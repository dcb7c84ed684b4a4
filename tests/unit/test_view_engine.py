"""Which engine refreshes a materialized view (featurelake.materialized_views_spark.choose_view_engine)."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from featurelake.materialized_views_spark import (
    DELTA_SPARK_EXTENSION,
    choose_view_engine,
    delta_spark_package,
)


def test_auto_takes_spark_when_the_connection_loads_the_delta_extension() -> None:
    conf = {"spark.sql.extensions": f"org.example.OtherExtension, {DELTA_SPARK_EXTENSION}"}
    choice = choose_view_engine("auto", conf)
    assert choice.engine == "spark" and DELTA_SPARK_EXTENSION in choice.reason


@pytest.mark.parametrize(
    "conf",
    [
        {},
        {"spark.sql.extensions": "org.example.OtherExtension"},
        {"spark.jars.packages": delta_spark_package()},
    ],
)
def test_auto_keeps_delta_rs_otherwise(conf: dict[str, str]) -> None:
    assert choose_view_engine("auto", conf).engine == "deltalake"


@pytest.mark.parametrize("engine", ["deltalake", "spark"])
def test_an_explicit_engine_wins_over_the_connection(engine: str) -> None:
    conf = {"spark.sql.extensions": DELTA_SPARK_EXTENSION}
    assert choose_view_engine(engine, conf if engine == "deltalake" else {}).engine == engine


def test_an_unknown_engine_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="view engine must be one of auto, deltalake, spark, got 'delta'"):
        choose_view_engine("delta", {})


def test_the_jar_coordinates_follow_the_installed_python_package() -> None:
    assert delta_spark_package() == f"io.delta:delta-spark_2.13:{version('delta-spark')}"
