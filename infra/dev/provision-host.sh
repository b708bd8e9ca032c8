#!/usr/bin/env bash
# Makes a Debian machine (as root) ready to run Glider Gun's tests and its node worker:
# installs Debian's docker.io (dockerd, containerd, runc, tini) and busybox-static (for the locally made
# base images), starts dockerd if it is not answering, and starts the machine's Postgres if it is
# installed but down. For the Kubernetes test cluster (infra/dev/kubernetes.ts) it installs the CNI
# plugins, the image registry, openssl, iptables and iproute2, and gcc for the pause image.
# Idempotent: on a ready machine it only checks. Progress goes to stderr.
set -euo pipefail

say() { echo "[provision] $*" >&2; }

wait_for() { # wait_for <what> <seconds> <command...>
  local what=$1 timeout=$2 waited=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((waited >= timeout)); then
      say "FAILED: ${what} not ready after ${timeout}s"
      return 1
    fi
    if ((waited % 5 == 0)); then say "waiting for ${what} (${waited}s)"; fi
    sleep 1
    waited=$((waited + 1))
  done
  say "${what} is ready"
}

if [ "$(id -u)" != 0 ]; then
  say "run as root (it installs Debian packages and starts dockerd)"
  exit 1
fi

packages=()
command -v dockerd >/dev/null || packages+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || packages+=(busybox-static)
# The Kubernetes test cluster: pod networking (bridge, host-local, loopback, portmap, firewall in /usr/lib/cni),
# the registry its node pulls from, its certificates, the firewall plugin's iptables, and a static pause binary;
# iproute2 for the remote-node fault tests (a node in a network namespace of its own, test/support/netns.ts).
for pkg in containernetworking-plugins docker-registry openssl iptables iproute2 gcc libc6-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || packages+=("$pkg")
done
if ((${#packages[@]})); then
  say "installing ${packages[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  # A previous machine session may have left a pid file behind with no process: dockerd refuses to start then.
  for pidfile in /var/run/docker.pid /run/docker/containerd/containerd.pid; do
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      say "removing stale $pidfile"
      rm -f "$pidfile"
    fi
  done
  say "starting dockerd (log: /var/log/glider-gun-dockerd.log)"
  setsid nohup dockerd >/var/log/glider-gun-dockerd.log 2>&1 </dev/null &
  wait_for "the Docker engine" 90 docker info || { tail -20 /var/log/glider-gun-dockerd.log >&2; exit 1; }
else
  say "the Docker engine is running"
fi

if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
  version=$(ls /etc/postgresql | sort -V | tail -1)
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    say "starting the machine's Postgres ${version}"
    pg_ctlcluster --skip-systemctl-redirect "${version}" main start || true
    wait_for "Postgres" 60 pg_isready -h 127.0.0.1 -p 5432 -q
  else
    say "Postgres is running"
  fi
fi

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  say "note: Go is at /usr/local/go/bin but not on PATH; the Temporal CLI build needs it there"
fi
k8s_bin=${GLIDERGUN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/glider-gun}/kubernetes-${K8S_VERSION:-1.34.4}/bin
if [ -x "$k8s_bin/kubelet" ]; then
  say "the Kubernetes components are built ($k8s_bin)"
else
  say "note: the Kubernetes components are not built yet: the first test run builds them (infra/k8s/build.sh, minutes)"
fi
say "host ready"
