"""A mistyped flag of a subcommand is answered by that subcommand: its usage, the error and
the flag it most likely meant."""

from __future__ import annotations

import pytest

from atrous.cli import main


def _error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_a_mistyped_flag_gets_the_subcommands_usage_and_a_suggestion(capsys) -> None:
    err = _error(["predict", "W.safetensors", "x.jpg", "-o", "o", "--scaels", "1"], capsys)
    assert err.startswith("usage: atrous predict "), err
    assert "atrous predict: error: unrecognized arguments: --scaels" in err
    assert "did you mean --scales?" in err


def test_a_flag_with_its_value_and_no_close_match(capsys) -> None:
    err = _error(["eval", "W.safetensors", "--data", "d", "--scales=1", "--zzzzzz"], capsys)
    assert err.startswith("usage: atrous eval ") and "unrecognized arguments: --zzzzzz" in err
    assert "did you mean" not in err
    err = _error(["predict", "W.safetensors", "x.jpg", "-o", "o", "--scaels=1"], capsys)
    assert "did you mean --scales?" in err
