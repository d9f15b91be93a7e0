#!/usr/bin/env bash
# Installs everything the test stack needs, idempotently and cached:
# Debian packages (Prometheus, Alertmanager, PostgreSQL, openssl), the Kafka
# jars from Maven Central, and the Kubernetes control plane + etcd + KWOK
# built from the Go module proxy. A second run takes seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
t0=$(date +%s)
bash "$here/install-debian.sh"
bash "$here/fetch-kafka.sh"
bash "$here/build-kube.sh"
echo "stack: installed in $(( $(date +%s) - t0 ))s"
