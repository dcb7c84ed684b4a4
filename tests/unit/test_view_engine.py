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


def test_the_jar_coordinates_are_those_delta_spark_itself_names() -> None:
    """delta-spark's `configure_spark_with_delta_pip` names the artifact built for the installed
    pyspark (`delta-spark_4.2_2.13`); this project named the unsuffixed one, built for the
    release's default Spark alone. A builder's config is recorded, not applied: no Spark starts."""
    from delta.pip_utils import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    builder = configure_spark_with_delta_pip(SparkSession.Builder())
    assert builder._options["spark.jars.packages"] == delta_spark_package()
    pyspark_minor = ".".join(version("pyspark").split(".")[:2])
    assert delta_spark_package() == f"io.delta:delta-spark_{pyspark_minor}_2.13:{version('delta-spark')}"
