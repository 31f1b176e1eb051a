"""TABLE.COLUMN names on the command line, with SQL-style double quotes for names with dots."""

from __future__ import annotations

import pytest

from embeddb.column_names import quoted_column_name, split_column_name
from embeddb.errors import EmbeddbError


@pytest.mark.parametrize(("text", "parts"), [
    ("tickets.embedding", (None, "tickets", "embedding")),
    ("app.tickets.embedding", ("app", "tickets", "embedding")),
    ('"dot.ted".embedding', (None, "dot.ted", "embedding")),
    ('app."dot.ted"."the.vector"', ("app", "dot.ted", "the.vector")),
    ('"say ""hi""".embedding', (None, 'say "hi"', "embedding")),
    ("Tickets.embedding", (None, "Tickets", "embedding")),  # not folded to lower case
])
def test_split_column_name(text: str, parts: tuple[str | None, str, str]) -> None:
    assert split_column_name(text) == parts


@pytest.mark.parametrize(("text", "error"), [
    ("tickets", "name a column as TABLE.COLUMN"),
    ("a.b.c.d", "name a column as TABLE.COLUMN"),
    ('"dot.ted.embedding', "a double quote is not closed"),
    ('"dot"ted.embedding', "expected a dot after the quoted name 'dot'"),
    ('dot"ted".embedding', "a double quote may only enclose a whole name"),
    ("tickets..embedding", "a name is empty"),
    ("tickets.", "a name is empty"),
    ('"".embedding', "a name is empty"),
])
def test_bad_names_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(EmbeddbError, match=error):
        split_column_name(text)


@pytest.mark.parametrize("parts", [
    ("public", "tickets", "embedding"), ("public", "dot.ted", "embedding"),
    ("a b", 'say "hi"', "Vector"), ("s", "t", "9lives"),
])
def test_quoted_names_read_back(parts: tuple[str, str, str]) -> None:
    assert split_column_name(quoted_column_name(*parts)) == parts


def test_only_names_that_need_it_are_quoted() -> None:
    assert quoted_column_name("public", "dot.ted", "embedding") == 'public."dot.ted".embedding'
    assert quoted_column_name("public", "Tickets", "embedding") == "public.Tickets.embedding"
