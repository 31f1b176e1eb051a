"""``python -m examples.search_service [--port 8000] [--database-url URL]``: serve the page.

With no URL it uses ``$EMBEDDB_DATABASE_URL``, else embeddb's embedded PostgreSQL (started if
needed), where ``make demo`` built the index.
"""

from __future__ import annotations

import argparse

import sqlalchemy as sa
import uvicorn

from embeddb.database import create_engine, database_url

from .app import create_app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    url = database_url(args.database_url)
    engine = create_engine(url)
    with engine.connect() as conn:
        ready = sa.inspect(conn).has_table("stdlib_docs")
    engine.dispose()
    if not ready:
        print("no stdlib_docs table in this database: run `make demo` first to build the index")
        return 1
    print(f"stdlib docs search on http://{args.host}:{args.port}")
    uvicorn.run(create_app(url), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
