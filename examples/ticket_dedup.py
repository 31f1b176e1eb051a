"""Support-ticket deduplication: group the open tickets that report the same problem.

Run: ``.venv/bin/python examples/ticket_dedup.py [--database-url URL] [--threshold 0.7]``
(with no URL, embeddb's embedded PostgreSQL). It creates a ``dedup_tickets`` table, writes a
day's tickets, lets the worker embed them, then asks embeddb for every pair of open tickets at
least ``--threshold`` alike (each ticket's nearest neighbours come from the HNSW index: no
all-pairs scan), joins the pairs into groups, and shows what a new ticket resembles.
"""

from __future__ import annotations

import argparse

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from embeddb import Embedding, Worker
from embeddb.database import create_engine, database_url
from embeddb.query._neighbours import duplicate_groups, more_like_this, near_duplicates

TICKETS = [
    ("Can't log in", "I forgot my password and the reset email never arrives.", "open"),
    ("Password reset email missing", "I requested a password reset twice, no email came.",
     "open"),
    ("Locked out of my account", "The reset link is not arriving so I cannot sign in.", "open"),
    ("Charged twice", "My card was billed two times for the same order.", "open"),
    ("Duplicate charge on my credit card", "I see two identical payments for one purchase.",
     "open"),
    ("App crashes when uploading photos", "Every time I upload a picture the app closes.",
     "open"),
    ("Crash on image upload", "The app quits as soon as I attach a photo.", "open"),
    ("Change delivery address", "I need my order shipped to a different address.", "open"),
    ("Invoice for March", "Please send me the invoice for last month's subscription.", "open"),
    ("Dark mode", "Would love a dark theme in the mobile app.", "open"),
    ("Cancel subscription", "How do I stop my monthly plan?", "open"),
    ("Wrong size", "The shoes I received are a size too small, can I exchange them?", "open"),
    ("Billed twice", "I was charged two times for one order last week.", "closed"),
]


class Base(DeclarativeBase):
    pass


class Ticket(Base):
    __tablename__ = "dedup_tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str]
    body: Mapped[str]
    status: Mapped[str] = mapped_column(index=True)
    embedding = Embedding("{subject}\n\n{body}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database-url", help="default: $EMBEDDB_DATABASE_URL or embedded")
    parser.add_argument("--threshold", type=float, default=0.7, help="cosine similarity")
    args = parser.parse_args()

    url = database_url(args.database_url)
    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Ticket(subject=subject, body=body, status=status)
                        for subject, body, status in TICKETS)
        session.commit()
    with Worker(url) as worker:  # in production: `embeddb worker`, running all along
        worker.run_once()

    with Session(engine) as session:
        subjects = dict(session.execute(sa.select(Ticket.id, Ticket.subject)).tuples().all())
        pairs = near_duplicates(session, Ticket.embedding, min_similarity=args.threshold,
                                where=Ticket.status == "open")
        print(f"{len(pairs)} pairs of open tickets at least {args.threshold} alike:")
        for pair in pairs:
            print(f"  {pair.similarity:.2f}  #{pair.first} {subjects[pair.first]!r}"
                  f" ~ #{pair.second} {subjects[pair.second]!r}")
        print("\nduplicate groups (merge each into its first ticket):")
        for group in duplicate_groups(pairs):
            print("  " + ", ".join(f"#{key} {subjects[key]!r}" for key in group))

        new = Ticket(subject="Payment taken twice", body="Two charges appeared for my order.",
                     status="open")
        session.add(new)
        session.commit()
        new_id = new.id
    with Worker(url) as worker:
        worker.run_once()
    with Session(engine) as session:
        print(f"\nnew ticket #{new_id} looks like:")
        for ticket, similarity in more_like_this(session, Ticket.embedding, new_id, k=3):
            print(f"  {similarity:.2f}  #{ticket.id} {ticket.subject!r} ({ticket.status})")
    engine.dispose()


if __name__ == "__main__":
    main()
