"""The example application's models, rebuilt with changes, as a developer would edit them.

``example_metadata()`` with no arguments is ``examples/alembic_app/models.py``; a test checks
that the two agree (``alembic check`` passes against the example at head).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, mapped_column

from embeddb import Embedding

EXAMPLE_EMBEDDING: dict[str, Any] = {
    "template": "{subject}\n\n{body}", "m": 24, "ef_construction": 100,
}


def example_metadata(
    embedding: dict[str, Any] | None = EXAMPLE_EMBEDDING,
    *,
    columns: dict[str, Any] | None = None,
    without: Sequence[str] = (),
    tables: Sequence[Callable[[type[DeclarativeBase]], object]] = (),
) -> sa.MetaData:
    """The example's metadata; ``embedding`` holds ``Embedding``'s arguments (None: no embedding),
    ``columns`` adds columns to tickets, ``without`` removes some, ``tables`` adds tables."""

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id = mapped_column(sa.Integer, primary_key=True)
        name = mapped_column(sa.String, nullable=False)
        email = mapped_column(sa.String, nullable=False, unique=True)

    ticket: dict[str, Any] = {
        "__tablename__": "tickets",
        "id": mapped_column(sa.Integer, primary_key=True),
        "customer_id": mapped_column(sa.Integer, sa.ForeignKey("customers.id"), nullable=True),
        "subject": mapped_column(sa.String, nullable=False),
        "body": mapped_column(sa.String, nullable=False),
        "status": mapped_column(sa.String, nullable=False, default="open", index=True),
    }
    for name in without:
        del ticket[name]
    ticket.update(columns or {})
    if embedding is not None:
        options = dict(embedding)
        ticket["embedding"] = Embedding(options.pop("template"), **options)
    type("Ticket", (Base,), ticket)
    for make in tables:
        make(Base)
    return Base.metadata
