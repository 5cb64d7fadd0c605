"""Parameter types the commands share."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """A float range that refuses nan and ±inf, which click's FloatRange lets through: `simulate
    --days inf` never ended, `--last-days nan` reported nan shares (and JSON no parser reads)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _texts(value: Any) -> list[str]:
    """The strings of a parameter's value (one, or each of a repeated option's)."""
    if isinstance(value, str):
        return [value]
    return [item for item in value if isinstance(item, str)] if isinstance(value, tuple) else []


class TextCommand(click.Command):
    """A command whose text arguments are valid UTF-8, checked before it runs: an argument in another
    encoding (`--customer $'Jos\\xe9'`) reaches Python as a lone surrogate, which protobuf cannot
    encode; `decide`, `outcome`, `forget` and `explain` ended in a UnicodeEncodeError traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        for param in self.params:
            for text in _texts(ctx.params.get(param.name or "")):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as error:
                    raise click.BadParameter(f"not valid UTF-8 (character {error.start + 1})", ctx=ctx, param=param) from None
        return super().invoke(ctx)


class ApiKey(click.ParamType[str]):
    """An API key gRPC can send: printable ASCII (a metadata value holds nothing else; a newline or a
    non-ASCII character gave "INTERNAL: Invalid metadata" and gRPC's own trace lines). The key is a
    secret: the message says where it goes wrong, never what it is."""

    name = "api key"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        key = str(value)
        for i, character in enumerate(key):
            if not " " <= character <= "~":
                self.fail(f"an API key is printable ASCII; character {i + 1} of {len(key)} is not", param, ctx)
        return key


class TextGroup(click.Group):
    """A group whose commands are TextCommands."""

    command_class = TextCommand
