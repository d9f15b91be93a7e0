#!/usr/bin/env bash
# Builds the Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl), etcd and KWOK from the Go module proxy into a
# versioned cache folder. A second run finds the stamp and returns at once; a
# run after a failure reuses the components that were already built.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the staging
# modules (k8s.io/api, k8s.io/client-go, ...) with local paths. We build it from
# a wrapper module that replaces each of them with the published v0.Y.Z version.
#
# Measured (2 cores, 2026-11, v1.36.3 / etcd v3.6.14 / kwok v0.8.0, Go 1.26.8): etcd 62 s,
# kwok 170 s, kube-apiserver 243 s, controller-manager 77 s, scheduler 6 s, kubectl 29 s:
# about 10 min in all, 3.7 GB of Go build cache and 1.3 GB of module cache.
#
# Note: each component runs as a plain command (not in an `a && b` list) so that
# `set -e` stays in force inside it; a failure stops the script before the stamp.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${ROLLBACKD_CACHE:-$HOME/.cache/rollbackd}
out="$cache/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
if [ -f "$out/.complete" ]; then
  echo "kube: cached in $out"
  exit 0
fi
mkdir -p "$out/bin"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
log() { echo "kube: $(date +%T) $*"; }

# The stages the bare kwok binary needs, relative to kustomize/stage in its module. The project's own
# stages (tests/stack/kwok/) are not cached here: tests/stack/kube.py adds them, and keeps pod-ready off
# held pods, each time a cluster starts, so changing them needs no rebuild.
KWOK_STAGES="node/fast/node-initialize.yaml
node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
pod/fast/pod-ready.yaml
pod/fast/pod-complete.yaml
pod/fast/pod-delete.yaml"
KWOK_STAGE_NAMES="node-initialize node-heartbeat-with-lease pod-ready pod-complete pod-delete"

build_kube() {
  local w="$cache/build/kube-$KUBE_VERSION"
  mkdir -p "$w" && cd "$w"
  [ -f go.mod ] || go mod init rollbackd.local/kubebuild >/dev/null 2>&1
  log "resolving k8s.io/kubernetes@$KUBE_VERSION"
  local modjson gomod
  modjson=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION")
  gomod=$(printf '%s' "$modjson" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
    go mod edit -replace="$m=$m@$KUBE_STAGING_VERSION"
  done
  go mod edit -require="k8s.io/kubernetes@$KUBE_VERSION"
  cat > tools.go <<'GO'
//go:build tools

package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "go mod tidy"
  go mod tidy -e >/dev/null 2>tidy.log || { cat tidy.log; return 1; }
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  local c t
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    if [ -x "$out/bin/$c" ]; then log "$c already built"; continue; fi
    log "building $c"
    t=$(date +%s)
    go build -trimpath -tags providerless -ldflags "$ld" -o "$out/bin/$c" "k8s.io/kubernetes/cmd/$c"
    log "built $c in $(( $(date +%s) - t ))s"
  done
}

build_etcd() {
  if [ -x "$out/bin/etcd" ]; then log "etcd already built"; return 0; fi
  local w="$cache/build/etcd-$ETCD_VERSION"
  mkdir -p "$w" && cd "$w"
  [ -f go.mod ] || go mod init rollbackd.local/etcdbuild >/dev/null 2>&1
  log "building etcd $ETCD_VERSION"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>get.log || { cat get.log; return 1; }
  go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  local w="$cache/build/kwok-$KWOK_VERSION"
  mkdir -p "$w" && cd "$w"
  if [ -x "$out/bin/kwok" ]; then
    log "kwok already built"
  else
    log "building kwok $KWOK_VERSION"
    GOBIN="$out/bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  fi
  # The bare binary has no stages: collect the ones shipped in its module.
  local src f p name
  src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  : > "$out/kwok-stages.yaml.tmp"
  for f in $KWOK_STAGES; do
    p="$src/kustomize/stage/$f"
    [ -f "$p" ] || { echo "kube: kwok stage $f missing in $src/kustomize/stage" >&2; return 1; }
    { echo "---"; cat "$p"; } >> "$out/kwok-stages.yaml.tmp"
  done
  for name in $KWOK_STAGE_NAMES; do
    grep -qE "^  name: $name\$" "$out/kwok-stages.yaml.tmp" || { echo "kube: stage $name not found" >&2; return 1; }
  done
  mv "$out/kwok-stages.yaml.tmp" "$out/kwok-stages.yaml"
}

step() {  # step NAME FUNCTION: run it in a subshell (it cd's), with timing
  local t
  t=$(date +%s)
  ( "$2" )
  log "$1 done in $(( $(date +%s) - t ))s"
}

t0=$(date +%s)
step etcd build_etcd
step kwok build_kwok
step kubernetes build_kube
for b in etcd kwok kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [ -x "$out/bin/$b" ] || { echo "kube: $out/bin/$b missing" >&2; exit 1; }
done
touch "$out/.complete"
log "done in $(( $(date +%s) - t0 ))s -> $out"
