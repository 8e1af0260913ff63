#!/usr/bin/env bash
# Runs the tests that exercise trainwire's SQL (schema migrations, analysis queries) on the
# ClickHouse version compose.yaml pins for servers, not only on the newer chdb of .venv.
# No server runs: chdb 4.0.x embeds ClickHouse 25.8, so a second venv (.venv-ch25) with that chdb
# runs the same tests through the same clickhouse-connect chdb interface.
set -euo pipefail
cd "$(dirname "$0")/.."
CHDB_VERSION=${CHDB_VERSION:-4.0.2}   # engine 25.8.2.1; chdb 4.1+ embeds 26.x
VENV=.venv-ch25
export PIP_DISABLE_PIP_VERSION_CHECK=1

# A venv holding another chdb is made afresh (chdb 4.1+ adds chdb-core; a downgrade over it breaks).
have=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("chdb"))' 2>/dev/null || true)
if [ "$have" != "$CHDB_VERSION" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi

# pyproject.toml requires a newer chdb, so install its dependencies with chdb swapped for the pin,
# then trainwire itself without dependencies.
mapfile -t deps < <(python3 -c '
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["dev"] if not d.startswith("chdb")))')
"$VENV/bin/pip" install -q "chdb==$CHDB_VERSION" "${deps[@]}"
"$VENV/bin/pip" install -q --no-deps -e .

pinned=$(sed -n 's|^ *image: clickhouse/clickhouse-server:\([0-9.]*\).*|\1|p' compose.yaml)
engine=$("$VENV/bin/python" -c 'import chdb; print(chdb.query("SELECT version()", "CSV").bytes().decode().strip().strip("\""))')
echo "clickhouse_compat: chdb $CHDB_VERSION embeds ClickHouse $engine; compose.yaml pins clickhouse-server:$pinned"
case "$engine" in
  "$pinned" | "$pinned".*) ;;
  *) echo "clickhouse_compat: set CHDB_VERSION to a chdb whose engine is ClickHouse $pinned" >&2; exit 1 ;;
esac

"$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_store.py tests/test_analysis.py tests/test_config.py \
  tests/test_worker.py tests/test_dataset.py tests/test_importers.py
echo "clickhouse_compat: migrations and analysis queries pass on ClickHouse $engine"
