"""Database URLs: libpq keyword strings accepted, and passwords never shown, wherever written."""

from __future__ import annotations

import psycopg.conninfo
import pytest

from embeddb.database import libpq_conninfo, parse_url, redacted, sqlalchemy_url
from embeddb.errors import DatabaseError


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://app:hunter2@db/app", "postgresql://app:***@db/app"),
    ("postgresql://app@db/app?password=hunter2&sslmode=require",
     "postgresql://app@db/app?password=***&sslmode=require"),
    ("postgresql://app@db/app?sslpassword=hunter2", "postgresql://app@db/app?sslpassword=***"),
    ("host=db port=5433 dbname=app user=app password=hunter2",
     "postgresql:///app?host=db&password=***&port=5433&user=app"),
    ("host=db dbname=app password='hunter2 with spaces'",
     "postgresql:///app?host=db&password=***"),
])
def test_redacted_hides_every_way_of_writing_a_password(url: str, shown: str) -> None:
    assert redacted(url) == shown
    assert "hunter2" not in redacted(url)


def test_a_path_to_a_password_file_is_not_a_secret() -> None:
    assert redacted("postgresql://app@db/app?passfile=/etc/pgpass") == (
        "postgresql://app@db/app?passfile=%2Fetc%2Fpgpass")


def test_a_keyword_string_reaches_libpq_with_every_setting() -> None:
    given = "host=/run/pg,/run/pg2 port=5433 dbname=app user=me password=hunter2 sslmode=disable"
    assert psycopg.conninfo.conninfo_to_dict(libpq_conninfo(given)) == (
        psycopg.conninfo.conninfo_to_dict(given))
    url = sqlalchemy_url(given)
    assert url.drivername == "postgresql+psycopg" and url.database == "app"


@pytest.mark.parametrize("garbage", ["host=db password", "not a url", "host='unterminated"])
def test_an_unparseable_url_is_refused_without_repeating_it(garbage: str) -> None:
    with pytest.raises(DatabaseError, match="cannot be parsed") as raised:
        parse_url(garbage)
    assert garbage not in str(raised.value)
