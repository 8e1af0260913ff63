"""Keeps the dashboard panels that show a query of trainwire's SQL library in step with the library.

A panel target with ``"trainwireQuery": "<name>"`` shows the named query of ``trainwire.analysis.queries``
(``trainwire query <name>``): its ``rawSql`` is that query's SQL with the runs the dashboard's ``run``
variable selects in place of ``{runs:Array(String)}`` and every other parameter at its default, as a SQL
literal. After changing such a query, rewrite those targets and commit the dashboards with it::

    python infra/grafana/library_panels.py

``tests/test_grafana.py`` fails while a dashboard is out of step with the library.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from trainwire.analysis.queries import get_query

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"
SELECTED_RUNS = "[${run:singlequote}]"
"""The runs the ``run`` variable selects, as a ClickHouse array (All: every run it lists)."""

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*):([^}]+)\}")


def _literal(value: Any) -> str:
    """``value`` (a query parameter's default) as a ClickHouse literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    raise TypeError(f"no SQL literal for {value!r}")


def library_sql(name: str) -> str:
    """The SQL of library query ``name`` for a panel: the selected runs, other parameters at their defaults."""
    query = get_query(name)

    def bind(match: re.Match[str]) -> str:
        param = query.param(match[1])
        return SELECTED_RUNS if param.name == "runs" else _literal(param.default)

    return _PLACEHOLDER.sub(bind, query.sql.strip())


def library_targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panel targets of ``dashboard`` that show a library query."""
    return [t for p in dashboard.get("panels", []) for t in p.get("targets", []) if "trainwireQuery" in t]


def sync(path: Path) -> bool:
    """Rewrite the library targets of the dashboard at ``path``; True when one changed."""
    dashboard = json.loads(path.read_text())
    changed = False
    for target in library_targets(dashboard):
        sql = library_sql(target["trainwireQuery"])
        changed |= target["rawSql"] != sql
        target["rawSql"] = sql
    if changed:
        path.write_text(json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n")
    return changed


def main() -> int:
    """Sync every dashboard in ``infra/grafana/dashboards``; print the ones rewritten."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        if sync(path):
            print(f"rewrote {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
