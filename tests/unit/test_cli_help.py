"""Every operator command shows an example in its --help."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from rewardmiles.cli.main import app, command_groups


def _commands() -> list[tuple[str, str, str | None]]:
    out = []
    for words, typer_app in command_groups():
        for info in typer_app.registered_commands:
            name = info.name or (info.callback.__name__ if info.callback else "?")
            out.append((" ".join(words), name, info.epilog))
    return out


def test_every_command_has_an_example() -> None:
    commands = _commands()
    assert len(commands) >= 30
    assert [(g, n) for g, n, epilog in commands if not (epilog and "rewardmiles" in epilog)] == []


def test_help_shows_the_example() -> None:
    result = CliRunner().invoke(app, ["collector", "show", "--help"])
    assert result.exit_code == 0
    assert "Example: rewardmiles collector show 80085102028 --json" in result.stdout


def _help(*words: str) -> str:
    result = CliRunner().invoke(app, [*words, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.stdout


def _every_help() -> list[tuple[tuple[str, ...], str]]:
    pages: list[tuple[tuple[str, ...], str]] = [((), _help())]
    for group, typer_app in command_groups():
        if group:
            pages.append((group, _help(*group)))
        for info in typer_app.registered_commands:
            name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
            words = (*group, name)
            pages.append((words, _help(*words)))
    return pages


def test_help_reads_like_a_normal_cli() -> None:
    """Flags take no value, so show none; arguments are NAMES, as in usage lines everywhere."""
    bad = []
    for words, page in _every_help():
        for marker in ("<bool>", "<str>", "<int>", "<float>", "<path>"):
            if marker in page:
                bad.append((" ".join(words), marker))
        bad += [(" ".join(words), m) for m in re.findall(r"\{[a-z_]+\}", page)]
    assert bad == []


def test_flags_show_no_value_and_arguments_are_upper_case() -> None:
    page = _help("pending", "reject")
    assert "Usage: root pending reject [OPTIONS] LINE_ID" in page
    assert re.search(r"\*\s+LINE_ID\s+TEXT\s+TRANSACTION_ID:LINE_NO", page)
    serve = _help("serve")
    assert re.search(r"--demo\s+Seed demo data", serve)
    assert re.search(r"--port\s+INTEGER\s+TCP port", serve)
    assert re.search(r"--worker\s+--no-worker\s+Run a settlement worker", serve)
    assert re.search(r"--format\s+\[csv\|json\]", _help("report", "audit"))
    assert re.search(r"--status\s+\[ACTIVE\|ON_HOLD\|CLOSED\]", _help("collector", "add"))


def test_a_missing_argument_is_named_as_in_the_usage_line() -> None:
    result = CliRunner().invoke(app, ["pending", "reject"])
    assert result.exit_code == 2
    assert "Missing argument 'LINE_ID'" in result.output
