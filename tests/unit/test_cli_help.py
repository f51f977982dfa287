"""Every operator command shows an example in its --help."""

from __future__ import annotations

from typer.testing import CliRunner

from rewardmiles.cli.main import SUBCOMMANDS, app


def _commands() -> list[tuple[str, str, str | None]]:
    out = []
    for group, typer_app in [("", app), *((name, sub) for sub, name in SUBCOMMANDS)]:
        for info in typer_app.registered_commands:
            name = info.name or (info.callback.__name__ if info.callback else "?")
            out.append((group, name, info.epilog))
    return out


def test_every_command_has_an_example() -> None:
    commands = _commands()
    assert len(commands) >= 30
    assert [(g, n) for g, n, epilog in commands if not (epilog and "rewardmiles" in epilog)] == []


def test_help_shows_the_example() -> None:
    result = CliRunner().invoke(app, ["collector", "show", "--help"])
    assert result.exit_code == 0
    assert "Example: rewardmiles collector show 80085102028 --json" in result.stdout
