"""What a database holds, as plain data a test can compare: tables, columns with types,
indexes with their parameters, constraints, triggers, functions, embeddb's catalog rows."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"


def rows(conn: sa.Connection, query: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(sa.text(query))]


def snapshot(conn: sa.Connection) -> dict[str, Any]:
    """The schema as comparable sets. Columns are keyed by name: their order is not compared
    (create_embedding adds its two columns at the end of the table)."""
    columns = rows(conn, f"""
        SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND {USER_SCHEMAS}
          AND c.relname <> 'alembic_version'""")
    return {
        "columns": set(columns),
        "indexes": set(rows(conn, f"""
            SELECT n.nspname, c.relname, pg_get_indexdef(c.oid), c.reloptions::text
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'i' AND {USER_SCHEMAS} AND c.relname NOT LIKE 'alembic_version%'
        """)),
        "constraints": set(rows(conn, f"""
            SELECT n.nspname, con.conrelid::regclass::text, con.conname,
                   pg_get_constraintdef(con.oid)
            FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
            WHERE {USER_SCHEMAS} AND con.conname NOT LIKE 'alembic_version%'""")),
        "triggers": set(rows(conn, """
            SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
            FROM pg_trigger WHERE NOT tgisinternal""")),
        "functions": set(rows(conn, f"""
            SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid)
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE {USER_SCHEMAS} AND n.nspname <> 'public'""")),
        "catalog": catalog_rows(conn),
    }


def catalog_rows(conn: sa.Connection) -> set[tuple[Any, ...]]:
    if not conn.execute(sa.text("SELECT to_regclass('embeddb.columns')")).scalar():
        return set()
    return {tuple((k, str(v)) for k, v in row._mapping.items()
                  if k not in ("created_at", "updated_at"))
            for row in conn.execute(sa.text("SELECT * FROM embeddb.columns"))}


def embeddb_traces(conn: sa.Connection) -> dict[str, list[Any]]:
    """Everything of embeddb's that could be left behind; all empty when it is gone."""
    return {
        "schema": rows(conn, "SELECT nspname FROM pg_namespace WHERE nspname = 'embeddb'"),
        "functions": rows(conn, """
            SELECT p.oid::regprocedure::text FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'embeddb' OR p.proname ~ '^(render|enqueue)_[0-9]+$'"""),
        "triggers": rows(conn, "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'embeddb_%'"),
        "columns": rows(conn, """
            SELECT table_name, column_name FROM information_schema.columns
            WHERE column_name LIKE '%source_hash' OR udt_name = 'vector'"""),
        "indexes": rows(conn, "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%hnsw%'"),
    }
