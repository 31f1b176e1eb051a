"""Every ``embeddb`` command explains itself with an example, and connection errors are readable."""

from __future__ import annotations

import argparse

import pytest

from embeddb.cli import _parser, main


def subcommands() -> list[str]:
    parser = _parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("embeddb's parser has no subcommands")


def test_there_are_subcommands() -> None:
    assert {"worker", "status", "search"} <= set(subcommands())


@pytest.mark.parametrize("name", subcommands())
def test_help_has_an_example(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "example:" in out
    assert "embeddb" in out
    example = out.split("example:", 1)[1]
    assert f"embeddb {name}" in example, f"the example for {name!r} should show 'embeddb {name}'"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://nobody@127.0.0.1:1/nothing",
        "postgresql://nobody:s3cret@127.0.0.1:1/nothing",
    ],
)
def test_status_unreachable_database_is_a_clean_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "--database-url", url])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot connect" in err
    assert "127.0.0.1" in err
    assert "s3cret" not in err
    assert "Traceback" not in err
