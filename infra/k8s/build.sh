#!/usr/bin/env bash
# Builds the test cluster's Kubernetes components (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kubectl) and etcd from the Go module proxy into a cache folder keyed by version, and prints the
# folder. A second call finds the binaries and returns at once. Progress goes to stderr.
#
# k8s.io/kubernetes refers to its staging modules as `k8s.io/<name> v0.0.0` with a replace to ./staging,
# which is ignored outside its own repository; a wrapper module replaces each with the published v0.<minor>.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

K8S_VERSION=${K8S_VERSION:-1.34.4}
say() { echo "[k8s-build] $*" >&2; }

cache_base=${GLIDERGUN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/glider-gun}
out="$cache_base/kubernetes-$K8S_VERSION"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd)

all_there() { for b in "${binaries[@]}"; do [ -x "$out/bin/$b" ] || return 1; done; }
if all_there; then echo "$out"; exit 0; fi

# Two test runs starting at once build once: the second waits here, then finds the binaries.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
if ! flock -n 9; then
  say "another build of Kubernetes $K8S_VERSION is running; waiting for it"
  flock 9
fi
if all_there; then echo "$out"; exit 0; fi

started=$(date +%s)
work="$out.partial-$$"
rm -rf "$work"; mkdir -p "$work/src" "$work/bin"
trap 'rm -rf "$work"' EXIT

say "fetching k8s.io/kubernetes v$K8S_VERSION's module list"
mod=$(cd "$work/src" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
minor=${K8S_VERSION#1.}
staging=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$mod")
etcd_version=$(sed -n 's#^\s*go.etcd.io/etcd/server/v3 \(v[0-9.]*\).*#\1#p' "$mod")

{
  echo "module glider-gun.local/k8s-build"
  echo
  echo "go 1.24.0"
  echo
  echo "require ("
  echo "  k8s.io/kubernetes v$K8S_VERSION"
  echo "  go.etcd.io/etcd/server/v3 $etcd_version"
  echo ")"
  echo
  echo "replace ("
  for m in $staging; do echo "  $m => $m v0.$minor"; done
  echo ")"
} > "$work/src/go.mod"
cat > "$work/src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO

say "resolving modules (etcd $etcd_version)"
(cd "$work/src" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>"$work/tidy.log") || { tail -20 "$work/tidy.log" >&2; exit 1; }

for b in "${binaries[@]}"; do
  if [ -x "$out/bin/$b" ]; then cp "$out/bin/$b" "$work/bin/$b"; continue; fi
  pkg="k8s.io/kubernetes/cmd/$b"
  [ "$b" = etcd ] && pkg="go.etcd.io/etcd/server/v3"
  say "building $b (first time only; several minutes each on a small machine)"
  t0=$(date +%s)
  ( while sleep 30; do say "  still building $b ($(( $(date +%s) - t0 ))s)"; done ) & ticker=$!
  if ! (cd "$work/src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION" -o "$work/bin/$b" "$pkg" 2>"$work/build-$b.log"); then
    kill $ticker 2>/dev/null; tail -30 "$work/build-$b.log" >&2
    # Keep what was built, so the next attempt only builds the rest.
    mkdir -p "$out/bin"
    for done_b in "${binaries[@]}"; do [ -x "$work/bin/$done_b" ] && [ "$done_b" != "$b" ] && cp "$work/bin/$done_b" "$out/bin/"; done
    exit 1
  fi
  kill $ticker 2>/dev/null || true
  say "built $b in $(( $(date +%s) - t0 ))s"
done

mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
say "all components built in $(( $(date +%s) - started ))s into $out"
echo "$out"
