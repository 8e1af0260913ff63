#!/bin/bash
# Applies trainwire's schema migrations (mounted at /trainwire-migrations) on the first start of
# the ClickHouse container. `trainwire db migrate` against the server records them afterwards
# (every statement is IF NOT EXISTS, so running them again changes nothing).
set -euo pipefail
for f in /trainwire-migrations/*.sql; do
  echo "applying $f"
  clickhouse client --user "${CLICKHOUSE_USER:-default}" --password "${CLICKHOUSE_PASSWORD:-}" \
    --database "${CLICKHOUSE_DB:-trainwire}" --multiquery < "$f"
done
