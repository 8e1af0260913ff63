"""Versioned schema migrations: ``migrations/NNNN_name.sql``, applied once each, in order.

Applied versions are recorded in ``schema_migrations``. Every statement in a migration is
idempotent (``IF NOT EXISTS``), so a migration interrupted half-way can simply run again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import pyarrow as pa

from trainwire.errors import StoreError
from trainwire.events import utc_now
from trainwire.store.clickhouse import Store

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
MIGRATIONS_TABLE = "schema_migrations"


@dataclass(frozen=True)
class Migration:
    """One SQL file of the schema."""

    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements, split on ``;`` at the end of a line, comments dropped."""
        out = []
        for chunk in re.split(r";\s*$", self.sql, flags=re.MULTILINE):
            text = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
            if text:
                out.append(text)
        return out


def available_migrations() -> list[Migration]:
    """Every migration shipped with trainwire, by version."""
    folder = resources.files("trainwire.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two migrations share a version: {versions}")
    return found


def apply_migrations(store: Store) -> list[str]:
    """Apply what is not applied yet; return the ``NNNN_name`` of each migration applied now."""
    store.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
        "(version UInt32, name String, applied_at DateTime64(6, 'UTC')) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row["version"] for row in store.query_rows(f"SELECT version FROM {MIGRATIONS_TABLE} FINAL")}
    applied = []
    for migration in available_migrations():
        if migration.version in done:
            continue
        for statement in migration.statements():
            store.command(statement)
        store.insert_arrow(
            MIGRATIONS_TABLE,
            pa.table(
                {
                    "version": pa.array([migration.version], pa.uint32()),
                    "name": [migration.name],
                    "applied_at": pa.array([utc_now()], pa.timestamp("us", tz="UTC")),
                }
            ),
        )
        applied.append(f"{migration.version:04d}_{migration.name}")
    return applied
