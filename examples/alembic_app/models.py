"""The example application's models: support tickets, searchable by what they say.

``Ticket.embedding`` is an ordinary declaration; its migrations (``migrations/versions``) were
written by ``alembic revision --autogenerate``.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    email: Mapped[str] = mapped_column(unique=True)


class Ticket(Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("customers.id"))
    subject: Mapped[str]
    body: Mapped[str]
    status: Mapped[str] = mapped_column(default="open", index=True)
    embedding = Embedding("{subject}\n\n{body}", m=24, ef_construction=100)
