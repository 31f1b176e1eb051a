"""Every public name is documented for the caller, with an example."""

from __future__ import annotations

import inspect

import pytest

import embeddb


@pytest.mark.parametrize("name", [n for n in embeddb.__all__ if n != "DEFAULT_MODEL"])
def test_every_public_name_has_a_docstring_with_an_example(name: str) -> None:
    doc = inspect.getdoc(getattr(embeddb, name)) or ""
    assert doc, f"embeddb.{name} has no docstring"
    if issubclass(type(getattr(embeddb, name)), type) and issubclass(getattr(embeddb, name),
                                                                     Exception):
        return  # an exception's docstring is its default message (see embeddb.errors)
    assert "Example::" in doc or ">>>" in doc, f"embeddb.{name}'s docstring has no example"
