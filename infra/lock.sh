#!/usr/bin/env bash
# Refreshes the lock files that CI installs from to the newest releases pyproject.toml's ranges allow.
#   infra/requirements.lock       every package of the core and the dev, train, judge and ui extras (.ci/run)
#   infra/requirements-ch25.lock  the core and dev packages with chdb pinned by infra/ch25-override.txt to
#                                 compose.yaml's ClickHouse engine (infra/clickhouse_compat.sh)
# Run it on purpose, then the whole test suite on the new lock (bash .ci/run), and commit both files.
# Locked for CPython 3.11 on x86_64 Linux, the machines CI runs on.
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/uv.sh

compile() {
  "$UV" pip compile pyproject.toml --quiet --upgrade --python-version 3.11 \
    --python-platform x86_64-unknown-linux-gnu --no-header --annotation-style line "$@"
}
compile --extra dev --extra train --extra judge --extra ui -o infra/requirements.lock
compile --extra dev --override infra/ch25-override.txt -o infra/requirements-ch25.lock
echo "lock: infra/requirements.lock ($(grep -c '==' infra/requirements.lock) packages)," \
  "infra/requirements-ch25.lock ($(grep -c '==' infra/requirements-ch25.lock) packages, $(grep "^chdb==" infra/requirements-ch25.lock | cut -d" " -f1))"
