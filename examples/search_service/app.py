"""The FastAPI application: search, hybrid search and more-like-this over ``stdlib_docs``.

Every endpoint runs on an ``AsyncSession`` with embeddb's async helpers (``asearch``,
``ahybrid_search``, ``amore_like_this``): the query text is embedded in a worker thread, so one
slow model call never blocks the other requests.

    GET /api/search?q=parse+a+date&kind=function&module=datetime&k=10
    GET /api/hybrid?q=strptime&kind=function
    GET /api/similar/{id}?k=10
    GET /api/facets                   the modules and kinds the filters offer
    GET /                             the page (static/index.html)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from embeddb import ahybrid_search, amore_like_this, asearch
from embeddb.database import sqlalchemy_url
from embeddb.demo import StdlibDoc

PAGE = Path(__file__).with_name("static") / "index.html"
SUMMARY_CHARS = 160

Text = Annotated[str, Query(min_length=1, max_length=500, description="what to look for")]
Kind = Annotated[str | None, Query(description="module, class or function")]
Module = Annotated[str | None, Query(description="a module name, e.g. datetime")]
K = Annotated[int, Query(ge=1, le=50)]


def create_app(database_url: str) -> FastAPI:
    """The service over the demo's table in ``database_url``.

    Example::

        uvicorn.run(create_app("postgresql://localhost/embeddb"), port=8000)
    """
    engine = create_async_engine(sqlalchemy_url(database_url), pool_size=4)
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(title="stdlib docs search", lifespan=lifespan)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/api/search")
    async def search(q: Text, kind: Kind = None, module: Module = None,
                     k: K = 10) -> dict[str, Any]:
        async with sessions() as session:
            hits = await asearch(session, StdlibDoc.embedding, q, k=k,
                                 where=_filters(kind, module))
        return _result(hits.plan, hits.elapsed_ms,
                       [_doc(doc, similarity=similarity) for doc, similarity in hits])

    @app.get("/api/hybrid")
    async def hybrid(q: Text, kind: Kind = None, module: Module = None,
                     k: K = 10) -> dict[str, Any]:
        async with sessions() as session:
            hits = await ahybrid_search(session, StdlibDoc.embedding, q, k=k,
                                        where=_filters(kind, module))
        return _result(f"hybrid (vector leg {hits.plan})", hits.elapsed_ms, [
            _doc(hit.row, score=hit.score, vector_rank=hit.vector_rank, text_rank=hit.text_rank)
            for hit in hits])

    @app.get("/api/similar/{doc_id}")
    async def similar(doc_id: int, kind: Kind = None, module: Module = None,
                      k: K = 10) -> dict[str, Any]:
        async with sessions() as session:
            source = await session.get(StdlibDoc, doc_id)
            if source is None:
                raise HTTPException(404, f"stdlib_docs has no row with id {doc_id}")
            try:
                hits = await amore_like_this(session, StdlibDoc.embedding, doc_id, k=k,
                                             where=_filters(kind, module))
            except LookupError as exc:  # not embedded yet
                raise HTTPException(409, str(exc)) from exc
            result = _result(hits.plan, hits.elapsed_ms,
                             [_doc(doc, similarity=similarity) for doc, similarity in hits])
        return {**result, "source": _doc(source)}

    @app.get("/api/facets")
    async def facets() -> dict[str, list[str]]:
        async with sessions() as session:
            modules = await session.scalars(
                sa.select(StdlibDoc.module).distinct().order_by(StdlibDoc.module))
            return {"kinds": ["module", "class", "function"], "modules": list(modules)}

    return app


def _filters(kind: str | None, module: str | None) -> Any:
    conditions = []
    if kind:
        conditions.append(StdlibDoc.kind == kind)
    if module:
        conditions.append(StdlibDoc.module == module)
    return sa.and_(*conditions) if conditions else None


def _result(plan: str, elapsed_ms: float, hits: list[dict[str, Any]]) -> dict[str, Any]:
    return {"plan": plan, "elapsed_ms": round(elapsed_ms, 1), "hits": hits}


def _doc(doc: StdlibDoc, **scores: Any) -> dict[str, Any]:
    first = " ".join(doc.doc.split("\n\n", 1)[0].split())
    summary = first if len(first) <= SUMMARY_CHARS else first[: SUMMARY_CHARS - 1] + "…"
    return {"id": doc.id, "qualname": doc.qualname, "module": doc.module, "kind": doc.kind,
            "summary": summary, **{name: _round(value) for name, value in scores.items()}}


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
