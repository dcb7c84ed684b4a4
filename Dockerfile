# syntax=docker/dockerfile:1
# One image for every featurelake container: Airflow, the Spark master and workers, the Dask scheduler
# and workers. The Spark driver (in an Airflow task), its executors and the Dask workers therefore run
# the same Python, the same pinned packages and the same featurelake code.
#   docker compose build        # or: docker build -t featurelake:local .
FROM apache/airflow:3.3.2-python3.11

USER root
# Spark needs a JVM. The man1 dir works around openjdk's postinst on slim Debian images.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
# Named volumes copy the ownership of these dirs when first created, so uid 50000 (airflow) can write
# the lake from every container, and the API server can keep its generated passwords.
RUN mkdir -p /opt/featurelake/data /opt/airflow/auth /opt/airflow/logs \
    && chown -R airflow:0 /opt/featurelake /opt/airflow/auth /opt/airflow/logs
USER airflow

# Our lock is the constraint set (no Airflow constraints URL); it includes the celery provider for the
# `celery` profile.
COPY --chown=airflow:0 requirements.txt /opt/featurelake/requirements.txt
RUN uv pip install --no-cache -r /opt/featurelake/requirements.txt

# The project, installed editable: the .pth points at /opt/featurelake/{include,plugins}, so the
# bind mounts in docker-compose.yaml replace the baked-in code without a rebuild.
COPY --chown=airflow:0 pyproject.toml README.md /opt/featurelake/
COPY --chown=airflow:0 include /opt/featurelake/include
COPY --chown=airflow:0 plugins /opt/featurelake/plugins
COPY --chown=airflow:0 dags /opt/featurelake/dags
COPY --chown=airflow:0 spark_jobs /opt/featurelake/spark_jobs
RUN uv pip install --no-cache --no-deps -e /opt/featurelake

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/featurelake/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/featurelake/plugins \
    AIRFLOW_VAR_FEATURELAKE_LAKE=/opt/featurelake/data \
    PYSPARK_PYTHON=python3 \
    PYSPARK_DRIVER_PYTHON=python3 \
    TZ=UTC
