"""Where approved outputs land for downstream data work: tables in a DuckDB file.

Partitions are replaced whole, so re-materializing a day never duplicates its rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd

from resources.duckdb_file import default_data_dir, locked_connection


class DuckDBWarehouseResource(dg.ConfigurableResource):
    """``path`` defaults to ``$DAGSTER_HOME/ai_orchestration/warehouse.duckdb``."""

    path: Optional[str] = None

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else default_data_dir() / "warehouse.duckdb"

    def replace_partition(self, table: str, partition_column: str, partition: str, frame: pd.DataFrame) -> int:
        if not table.isidentifier() or not partition_column.isidentifier():
            raise ValueError(f"invalid table or column name: {table}.{partition_column}")
        frame = frame.assign(**{partition_column: partition})
        with locked_connection(self.resolved_path()) as conn:
            conn.register("incoming", frame)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM incoming LIMIT 0")
            conn.execute("BEGIN")
            conn.execute(f"DELETE FROM {table} WHERE {partition_column} = ?", [partition])
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
            conn.execute("COMMIT")
            (count,) = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {partition_column} = ?", [partition]).fetchone()
        return int(count)

    def replace_table(self, table: str, frame: pd.DataFrame) -> int:
        """Swap a whole derived table (a report recomputed from the ledger) in one transaction."""
        if not table.isidentifier():
            raise ValueError(f"invalid table name: {table}")
        with locked_connection(self.resolved_path()) as conn:
            conn.register("incoming", frame)
            conn.execute("BEGIN")
            conn.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM incoming")
            conn.execute("COMMIT")
            (count,) = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(count)

    def read(self, sql: str, params: Optional[list] = None) -> pd.DataFrame:
        with locked_connection(self.resolved_path(), read_only=True) as conn:
            return conn.execute(sql, params or []).df()
