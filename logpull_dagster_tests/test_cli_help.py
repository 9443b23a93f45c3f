"""``logpull --help`` and ``--version``: every command and option has help text, none shows raw backticks,
the exit codes are in the help, and the version is the package's."""

from __future__ import annotations

import argparse
import re

import pytest

import logpull_dagster
from logpull_dagster.cli import main, parser


def subcommands(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    subs = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subs[0].choices) if subs else {}


COMMANDS = sorted(subcommands(parser()))


def help_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr()
    assert out.err == ""
    return out.out


def test_the_commands_are_the_ones_documented():
    assert COMMANDS == ["recover", "reset", "skip-page", "status"]


@pytest.mark.parametrize("argv", [[], *[[c] for c in COMMANDS]], ids=lambda a: " ".join(a) or "logpull")
def test_every_help_renders_without_backticks_and_with_the_exit_codes(capsys, argv):
    text = help_of(capsys, argv)
    assert "`" not in text
    assert text.startswith(f"usage: logpull {' '.join(argv)}".rstrip())
    codes = text[text.index("exit codes:"):]
    for code, words in [(0, "ok"), (1, "gaps"), (2, "usage or config error"), (3, "internal error")]:
        assert re.search(rf"^  {code}  {words}", codes, re.M), (code, codes)


def test_every_command_and_option_has_help():
    top = parser()
    sub_action = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"logpull {a.option_strings}" for a in top._actions if not a.help and a is not sub_action]
    missing += [f"logpull {c.dest}" for c in sub_action._choices_actions if not c.help]
    for name, cmd in subcommands(top).items():
        missing += [f"logpull {name} {a.option_strings or a.dest}" for a in cmd._actions
                    if not a.help or a.help == argparse.SUPPRESS]
        assert cmd.description and "`" not in cmd.description
    assert missing == []


def test_version_is_the_packages(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"logpull-dagster {logpull_dagster.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", logpull_dagster.__version__)


@pytest.mark.parametrize("argv", [["status", "--debug"], ["--debug", "status"]])
def test_debug_is_taken_before_or_after_the_command(argv):
    assert parser().parse_args(argv).debug is True
    assert parser().parse_args(["status"]).debug is False
