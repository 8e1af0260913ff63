#!/usr/bin/env bash
# Validates compose.yaml with `docker compose config`, every profile included (no Docker engine needed).
# Where the compose plugin is missing, it is built once from the Go module proxy
# (github.com/docker/compose/v2) into ~/.docker/cli-plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPOSE_VERSION=${COMPOSE_VERSION:-v2.40.3}
if ! docker compose version >/dev/null 2>&1; then
  plugin="$HOME/.docker/cli-plugins/docker-compose"
  if [ ! -x "$plugin" ]; then
    command -v go >/dev/null || { echo "compose_check: needs Go to build the compose plugin" >&2; exit 1; }
    src=$(mktemp -d)
    dir=$(go mod download -json "github.com/docker/compose/v2@${COMPOSE_VERSION}" | python3 -c "import sys, json; print(json.load(sys.stdin)['Dir'])")
    cp -r "$dir/." "$src" && chmod -R u+w "$src"
    mkdir -p "$(dirname "$plugin")"
    (cd "$src" && go build -o "$plugin" ./cmd)
    rm -rf "$src"
  fi
fi
# every profile too (judge, grafana, grafana-embedded), whose services a plain `config` leaves out
docker compose -f compose.yaml --profile "*" config --quiet
echo "compose.yaml: valid, with every profile"
