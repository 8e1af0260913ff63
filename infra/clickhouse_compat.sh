#!/usr/bin/env bash
# Runs the tests that exercise trainwire's SQL (schema migrations, analysis queries) on the
# ClickHouse version compose.yaml pins for servers, not only on the newer chdb of .venv.
# No server runs: chdb 4.0.x embeds ClickHouse 25.8, so a second venv (.venv-ch25) installed from
# infra/requirements-ch25.lock (chdb pinned by infra/ch25-override.txt) runs the same tests through
# the same clickhouse-connect chdb interface.
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/uv.sh
VENV=.venv-ch25

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# sync: the venv holds exactly the lock (a chdb 4.1+ left over, with its chdb-core, would break a downgrade)
"$UV" pip sync --quiet --python "$VENV/bin/python" infra/requirements-ch25.lock
"$UV" pip install --quiet --python "$VENV/bin/python" --no-deps -e .

pinned=$(sed -n 's|^ *image: clickhouse/clickhouse-server:\([0-9.]*\).*|\1|p' compose.yaml)
engine=$("$VENV/bin/python" -c 'import chdb; print(chdb.query("SELECT version()", "CSV").bytes().decode().strip().strip("\""))')
echo "clickhouse_compat: $(grep '^chdb==' infra/requirements-ch25.lock | cut -d' ' -f1) embeds ClickHouse $engine; compose.yaml pins clickhouse-server:$pinned"
case "$engine" in
  "$pinned" | "$pinned".*) ;;
  *) echo "clickhouse_compat: pin a chdb whose engine is ClickHouse $pinned in infra/ch25-override.txt, then run infra/lock.sh" >&2; exit 1 ;;
esac

"$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_store.py tests/test_analysis.py tests/test_audit.py tests/test_config.py \
  tests/test_worker.py tests/test_dataset.py tests/test_importers.py tests/test_judge_provenance.py tests/test_grafana.py \
  tests/test_ui_search.py
echo "clickhouse_compat: migrations and analysis queries pass on ClickHouse $engine"
