"""`--help` that reads like any other command line tool's.

Typer shows every parameter's Python type: `--demo <bool>` (as if a flag took a value),
`--port <int>`, and required arguments as `{line_id}`. Here flags show no value, options show
click's familiar `INTEGER`, `TEXT`, `[csv|json]`, and arguments are upper-case names (`LINE_ID`),
in the usage line and in error messages alike. (Typer vendors its own click, so contexts and
parameters are typed loosely here.)
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN"}


def _click_type(label: str) -> str:
    """`<int>` -> `INTEGER`, `<csv|json>` -> `[csv|json]`, `<int range>` -> `INTEGER RANGE`."""
    inner = label.removeprefix("<").removesuffix(">")
    if inner.startswith("list[") and inner.endswith("]"):
        inner = inner[len("list[") : -1]
    if "|" in inner:
        return f"[{inner}]"
    return " ".join(_TYPE_NAMES.get(word, word.upper()) for word in inner.split())


class _Argument(TyperArgument):
    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else (self.name or "").upper()

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return _click_type(self.display_type(ctx))


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar
        return _click_type(self.display_type(ctx)) + ("..." if self.nargs != 1 else "")


def _readable(params: list[Any]) -> list[Any]:
    for param in params:
        if type(param) is TyperArgument:
            param.__class__ = _Argument
        elif type(param) is TyperOption:
            param.__class__ = _Option
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _readable(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _readable(super().get_params(ctx))
