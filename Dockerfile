# syntax=docker/dockerfile:1
# One image recipe, two targets: `services` (api, sse, workers, mock gateway, `flashsale migrate`; Helm picks
# the process per Deployment with `command:`) and `operator` (the kopf operator). Built by skaffold with
# BuildKit (cache mounts below); `docker build --target services .` works the same.
#
# Base image: python:3.11-slim (Debian trixie, CPython 3.11.15), pinned by the multi-arch index digest that
# docker-library/repo-info records for `python:3.11-slim-trixie` (repos/python/remote/3.11-slim-trixie.md @
# 2477d553d2fdfa57b4ec11f63c8376eca8b7a253). The digest was read from that record, not pulled here; to bump it,
# take the new digest from the same file (or `docker buildx imagetools inspect python:3.11-slim-trixie`).
# Python 3.11 because ruff/mypy target py311 (STYLE.md).

############################ build stages (uv, compilers' leftovers, caches) ############################
FROM python:3.11-slim-trixie@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff AS uv-base

# uv from PyPI, the same version the Makefile pins, so the lockfile is read by the uv that wrote it.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --disable-pip-version-check "uv==0.13.9"

# UV_COMPILE_BYTECODE: .pyc files are written at build time, since the root filesystem is read-only at run
# time. UV_LINK_MODE=copy: the cache is a separate mount, hard links across it would fail. The venv lives
# at /app/.venv and is copied as a whole into the runtime stage (same base image, same interpreter path).
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app

# The workspace manifests: the root pyproject (virtual, no [project]), both members and the one lockfile.
# uv needs every member's pyproject.toml to read the workspace, even when it installs only one package.
COPY pyproject.toml uv.lock ./
COPY services/pyproject.toml services/pyproject.toml
COPY operator/pyproject.toml operator/pyproject.toml

FROM uv-base AS services-build
# Third-party dependencies first: this layer changes only when uv.lock does, not on every source edit.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package flashsale
COPY services/src services/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package flashsale \
    && /app/.venv/bin/python -m compileall -q services/src

FROM uv-base AS operator-build
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package flashsale-operator
COPY operator/src operator/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package flashsale-operator \
    && /app/.venv/bin/python -m compileall -q operator/src

############################ runtime stages (no uv, no pip cache, non-root) ############################
FROM python:3.11-slim-trixie@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff AS runtime
# uid/gid 1000: the chart's securityContext (runAsUser 1000, runAsNonRoot) matches this user.
RUN groupadd --system --gid 1000 flashsale \
    && useradd --system --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin flashsale
# HOME=/tmp: the root filesystem is read-only in the cluster and /tmp is an emptyDir, so libraries that
# keep a cache under $HOME find a writable place.
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /app

FROM runtime AS services
# Source stays owned by root (immutable at run time). The skaffold `dev` profile passes SRC_OWNER=1000:1000
# so that file sync (tar into the running container as uid 1000) may overwrite it; see skaffold.yaml.
ARG SRC_OWNER=0:0
COPY --from=services-build /app/.venv /app/.venv
COPY --from=services-build --chown=${SRC_OWNER} /app/services/src /app/services/src
USER 1000:1000
EXPOSE 8000 8001 8002 9101 9102
CMD ["python", "-m", "flashsale.api"]

FROM runtime AS operator
COPY --from=operator-build /app/.venv /app/.venv
COPY --from=operator-build /app/operator/src /app/operator/src
USER 1000:1000
EXPOSE 8080
CMD ["python", "-m", "flashsale_operator"]
