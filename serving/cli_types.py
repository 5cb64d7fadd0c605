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


class TextGroup(click.Group):
    """The command line's group: every argument is valid UTF-8, checked before any command runs. An
    argument in another encoding (`--customer $'Jos\\xe9'`, `--note` in Latin-1) reaches Python as a
    lone surrogate, which neither protobuf nor a store can encode: commands ended in a UnicodeEncodeError
    traceback, or in one line that did not say which argument was wrong."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for i, arg in enumerate(args):
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError as error:
                where = args[i - 1] if i and args[i - 1].startswith("-") else f"argument {arg!r}"
                raise click.UsageError(f"{where}: not valid UTF-8 (character {error.start + 1})", ctx) from None
        return super().parse_args(ctx, args)


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
