# syntax=docker/dockerfile:1
# Conveyor: one image for the web app, the reconciler, the Prefect process worker, the Prefect
# server and the migration/seed Jobs. Build: docker build -t conveyor:0.1.0 .
#
# Stage 1 builds a virtualenv from the fully pinned lock (no resolution happens here: every
# package is installed with --no-deps at exactly the version the test suite ran against), then
# Conveyor itself. Stage 2 copies only that virtualenv onto a clean base: no compiler, no apt
# lists, no pip cache, no source tree.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Build tools only for packages that ship no wheel for the target platform (e.g. on arm64).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libpq-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/conveyor
ENV PATH=/opt/conveyor/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
# The lock comes from `pip freeze`; drop any line for Conveyor itself (installed from source below).
RUN grep -v -E '^(-e |conveyor([ =@]|$))' requirements.lock > /tmp/requirements.txt \
 && pip install --no-deps -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps . \
 && pip check \
 && conveyor --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="conveyor" \
      org.opencontainers.image.description="Self-hosted data connector platform (Prefect + dlt)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/conveyor/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/data \
    CONVEYOR_HOME=/data \
    PREFECT_HOME=/data/.prefect
RUN groupadd --system --gid 10001 conveyor \
 && useradd --system --uid 10001 --gid conveyor --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin conveyor \
 && mkdir -p /data \
 && chown conveyor:conveyor /data
COPY --from=build /opt/conveyor /opt/conveyor
WORKDIR /data
USER 10001:10001
# 8000 web app, 4200 Prefect server, 8080 Prefect worker health check.
EXPOSE 8000 4200 8080
ENTRYPOINT ["conveyor"]
CMD ["--help"]
