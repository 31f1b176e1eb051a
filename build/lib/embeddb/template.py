"""Text templates: which columns of a row make the text that is embedded, and how.

A template is a Python format string over column names, such as ``"{title}\\n\\n{body}"``.
It is compiled to one SQL expression, so the database renders the text: the trigger,
the worker and ``reconcile`` all see exactly the same text, and a user can look at it with
``SELECT embeddb.render_<id>(t) FROM t``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from psycopg import sql

from .errors import SpecError

ASCII_BLANKS = " \t\n\r\f\v\x1c\x1d\x1e\x1f"
"""What makes a text blank in a database whose encoding is not UTF-8."""

UNICODE_BLANKS = (
    ASCII_BLANKS
    + "\x85\xa0\u1680"
    + "".join(chr(code) for code in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
    + "\u200b\ufeff"  # zero-width space and BOM: not White_Space, but nothing to read either
)
"""What makes a text blank: every character Python's ``str.isspace`` accepts (Unicode's spaces,
line and paragraph separators), plus the invisible zero-width space and byte order mark."""


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text interleaved with column references."""

    source: str
    parts: tuple[tuple[str, str | None], ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        if not isinstance(source, str) or not source:
            raise SpecError("an Embedding template must be a non-empty string such as '{body}'")
        parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(source))
        except ValueError as exc:
            raise SpecError(f"template {source!r} is not a valid format string: {exc}") from exc
        for literal, field, spec, conversion in parsed:
            if field is not None:
                if not field or "." in field or "[" in field or field.isdigit():
                    raise SpecError(
                        f"template {source!r} refers to {{{field}}}; "
                        "only plain column names are allowed, such as {title}"
                    )
                if spec or conversion:
                    raise SpecError(
                        f"template {source!r} formats {{{field}}}; format specs and conversions "
                        "are not supported, because the database renders the text"
                    )
            if parts and parts[-1][1] is None:  # Formatter splits literal text at {{ and }}
                literal = parts.pop()[0] + literal
            parts.append((literal, field))
        if not any(field for _, field in parts):
            raise SpecError(f"template {source!r} names no column; write e.g. '{{body}}'")
        return cls(source, tuple(parts))

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names the template reads, in order of first use."""
        seen: dict[str, None] = {}
        for _, field in self.parts:
            if field is not None:
                seen.setdefault(field)
        return tuple(seen)

    def sql_expression(self, row: str, blanks: str = UNICODE_BLANKS) -> sql.Composable:
        """The SQL that renders this template for the row variable ``row``.

        Values are cast to text and NULL renders as the empty string. When every column is
        NULL, empty or blank (only characters of ``blanks``: spaces, tabs, newlines, U+00A0,
        U+3000...) the result is NULL: such a row has nothing to embed and its vector is NULL.
        """
        pieces: list[sql.Composable] = []
        for literal, field in self.parts:
            if literal:
                pieces.append(sql.Literal(literal))
            if field is not None:
                pieces.append(sql.SQL("{}::text").format(sql.Identifier(row, field)))
        all_empty = sql.SQL(" AND ").join(
            sql.SQL("btrim(coalesce({}::text, ''), {}) = ''").format(
                sql.Identifier(row, column), sql.Literal(blanks))
            for column in self.columns
        )
        return sql.SQL("CASE WHEN {} THEN NULL ELSE concat({}) END").format(
            all_empty, sql.SQL(", ").join(pieces)
        )
