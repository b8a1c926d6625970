"""Every command and every setting is documented (a Datasette habit)."""

from __future__ import annotations

from pathlib import Path

import click
import typer.main
from pydantic import BaseModel

from medlake.cli.main import app
from medlake.config import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _command_paths(command: click.Command, prefix: str) -> list[str]:
    # Typer's groups are not click.Group subclasses in every Typer version; duck-type.
    if hasattr(command, "commands"):
        paths = []
        for name, sub in command.commands.items():
            paths.extend(_command_paths(sub, f"{prefix} {name}"))
        return paths
    return [prefix]


def _setting_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.extend(_setting_names(annotation, f"{prefix}{name}."))
        else:
            names.append(f"{prefix}{name}")
    return names


def test_every_command_is_documented_in_cli_md() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    commands = _command_paths(typer.main.get_command(app), "medlake")
    assert len(commands) >= 6
    missing = [path for path in commands if f"## `{path}" not in text]
    assert not missing, f"undocumented commands: {missing}"


def test_every_command_has_help() -> None:
    group = typer.main.get_command(app)
    ctx = click.Context(group)
    for path in _command_paths(group, ""):
        command: click.Command = group
        for name in path.split():
            command = command.get_command(ctx, name)  # type: ignore[attr-defined]
        assert command.help, f"'medlake{path}' has no help text"


def test_every_setting_is_documented_in_settings_md() -> None:
    text = (DOCS / "settings.md").read_text(encoding="utf-8")
    missing = [name for name in _setting_names(Settings) if f"`{name}`" not in text]
    assert not missing, f"undocumented settings: {missing}"
