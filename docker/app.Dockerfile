# One image for llamadock's Python services: the gateway (default CMD), the
# orchestrator and the CLI (compose.yaml sets each one's command).
#
#   docker build -f docker/app.Dockerfile -t llamadock/app:dev .
#
# PYTHON_IMAGE defaults to the official image; machines without a registry
# get a local stand-in under the same name from scripts/make-base-images.sh.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LLAMADOCK_HOST=0.0.0.0

# setuptools goes in up front so the project layer below builds offline
# (--no-build-isolation) instead of fetching it again on every code change.
RUN python -m venv "$VIRTUAL_ENV" \
 && pip install --quiet "setuptools>=68" wheel

# Root owns the code and the venv; the services run unprivileged.  (To drive
# the host's Docker socket, compose adds the socket's group: group_add.)
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin llamadock \
 && install -d -m 1777 /run/llamadock
# /run/llamadock: where the orchestrator's API socket goes (a volume the gateway mounts too; a new
# volume takes this folder's mode, so the services can write it whatever uid they run as).

WORKDIR /app

# Dependencies only, read from pyproject.toml: this layer is rebuilt when
# pyproject.toml changes, not when the code does.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --quiet -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project itself: seconds, no network.
COPY common/ common/
COPY contract/ contract/
COPY gateway/ gateway/
COPY orchestrator/ orchestrator/
COPY cli/ cli/
COPY agent/ agent/
RUN pip install --quiet --no-deps --no-build-isolation . \
 && rm -rf build ./*.egg-info
USER llamadock

EXPOSE 8080
# urllib, not curl: the official slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('LLAMADOCK_PORT', '8080'), timeout=2)"]
CMD ["python", "-m", "gateway"]
