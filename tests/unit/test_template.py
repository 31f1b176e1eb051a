import pytest

from embeddb.errors import SpecError
from embeddb.template import ASCII_BLANKS, UNICODE_BLANKS, Template


def test_columns_in_order_of_first_use() -> None:
    template = Template.parse("{title}: {body} (again: {title})")
    assert template.columns == ("title", "body")


def test_escaped_braces_are_literal_text() -> None:
    template = Template.parse("{{not a column}} {body}")
    assert template.columns == ("body",)
    assert template.parts[0] == ("{not a column} ", "body")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "non-empty"),
        ("no columns here", "names no column"),
        ("{}", "plain column names"),
        ("{0}", "plain column names"),
        ("{author.name}", "plain column names"),
        ("{items[0]}", "plain column names"),
        ("{price:.2f}", "format specs"),
        ("{title!r}", "format specs"),
        ("{unclosed", "not a valid format string"),
    ],
)
def test_invalid_templates_are_refused_with_a_reason(source: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        Template.parse(source)


def test_sql_renders_null_as_empty_and_all_blank_as_null() -> None:
    sql_text = Template.parse("{title}\n\n{body}").sql_expression("r", blanks=" \t").as_string(None)
    assert sql_text == (
        "CASE WHEN btrim(coalesce(\"r\".\"title\"::text, ''), ' \t') = ''"
        " AND btrim(coalesce(\"r\".\"body\"::text, ''), ' \t') = '' THEN NULL"
        " ELSE concat(\"r\".\"title\"::text, '\n\n', \"r\".\"body\"::text) END"
    )


def test_blank_characters_are_what_python_calls_space_plus_zero_width_ones() -> None:
    spaces = {chr(code) for code in range(0x110000) if chr(code).isspace()}
    assert set(UNICODE_BLANKS) == spaces | {"\u200b", "\ufeff"}
    assert set(ASCII_BLANKS) == {c for c in spaces if c.isascii()}


def test_sql_quotes_literals_and_identifiers() -> None:
    sql_text = Template.parse("it's {Odd Name}").sql_expression("r").as_string(None)
    assert "'it''s '" in sql_text
    assert '"r"."Odd Name"::text' in sql_text
