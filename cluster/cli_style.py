"""How `tunectl` talks: help in the style of kubectl and helm, and every usage error in one line.

- Help is plain text, one option a line: `-f, --values FILE  Helm values file`,
  with a metavar that names what to pass (FILE, DIR, N, NAME, `H W`), never a
  Python type (`<path>`, `<list[Path]>`, `<int,int>...`), and the root's
  commands in sections (the `rich_help_panel` each command registers with).
- Arguments show as `SOURCE` in the usage line, not `{SOURCE}`.
- An option of two values takes them as `--size 600 200` or `--size 600,200`.
- A usage error (unknown option, missing value, a value of the wrong type) is
  one line on stderr, exit code 2, in our words, not the parser's (pydantic's
  "Input should be a valid integer, unable to parse string as an integer"):
  `error: --workers: 'abc' is not an integer (see 'tunectl local -h')`.

Typer builds the click commands from the registered functions; `TunectlGroup`
(the root's class) restyles the whole tree once it is built, so a command
registered anywhere gets the same conventions.
"""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from typer import _click as click  # Typer's own click (pinned typer==0.29.2 vendors it)
from typer._click import exceptions as errors
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["TunectlGroup", "usage_error_line"]

DEFAULT_SECTION = "Commands"


# ----- metavars ------------------------------------------------------------------------------


def _bare(annotation: Any) -> Any:
    """`X` of `X | None`, `list[X]`, `Annotated[X, ...]`."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (list, typing.Union, types.UnionType):
        return _bare(args[0]) if args else annotation
    return annotation


def _metavar(param: TyperOption | TyperArgument) -> str:
    """A metavar for a value of `param`'s type: what kubectl and helm would print."""
    annotation = _bare(param.type_descriptor.annotation)
    if typing.get_origin(annotation) is tuple:
        return " ".join(_metavar_of(a, param.name or "") for a in typing.get_args(annotation))
    return _metavar_of(annotation, param.name or "")


def _metavar_of(annotation: Any, name: str) -> str:
    if annotation is Path:
        return "DIR" if name.endswith("dir") else "FILE"
    if annotation is int:
        return "N"
    if annotation is float:
        return "NUMBER"
    return (name or "value").upper()


def _restyle(command: click.Command) -> None:
    """Plain help, metavars, and our usage and parsing for `command` and every command under it."""
    command.rich_markup_mode = None  # type: ignore[attr-defined]
    if type(command) is TyperCommand:  # Typer built it; our subclass only adds the usage line and `A,B` values
        command.__class__ = TunectlCommand
    for param in command.params:
        if isinstance(param, TyperOption) and not param.is_flag and param.metavar is None:
            param.metavar = _metavar(param)
        elif isinstance(param, TyperArgument) and param.metavar is None:
            param.metavar = (param.name or "value").upper()
    for sub in getattr(command, "commands", {}).values():
        _restyle(sub)


# ----- commands ------------------------------------------------------------------------------


class TunectlCommand(TyperCommand):
    """A leaf command: `SOURCE` in the usage line, and two-value options that also take `A,B`."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or (param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                arguments.append((param.metavar or record[0], record[1]))  # SOURCE, not `SOURCE <path>`
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, _split_pairs(self, args))
        except errors.UsageError as exc:
            if exc.ctx is None:  # the parser raises without one; the error line names the command's -h
                exc.ctx, exc.cmd = ctx, self
            raise


def _split_pairs(command: click.Command, args: list[str]) -> list[str]:
    """`--size 600,200` and `--size=600,200` as `--size 600 200`, for the options that take several values."""
    wanted = {opt: param.nargs for param in command.params if isinstance(param, TyperOption) and param.nargs > 1 for opt in param.opts}
    out: list[str] = []
    items = iter(args)
    for arg in items:
        name, eq, value = arg.partition("=")
        if name in wanted and eq and value.count(",") == wanted[name] - 1:
            out += [name, *value.split(",")]
            continue
        out.append(arg)
        if arg in wanted:
            following = next(items, None)
            if following is None:
                break
            parts = following.split(",")
            out += parts if len(parts) == wanted[arg] else [following]
    return out


class TunectlGroup(TyperGroup):
    """The root `tunectl` group: restyles its tree, lists commands in sections, and answers usage errors in one line."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _restyle(self)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        for name, command in commands:
            if command is None or command.hidden:
                continue
            section = getattr(command, "rich_help_panel", None) or DEFAULT_SECTION
            sections.setdefault(section, []).append((name, command.get_short_help_str(200)))  # whole, wrapped
        for section, rows in sections.items():
            with formatter.section(section):
                formatter.write_dl(rows)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except errors.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except errors.ClickException as exc:
            typer.echo(f"error: {usage_error_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except errors.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# ----- errors --------------------------------------------------------------------------------


def _hint(param: Any) -> str:
    if isinstance(param, TyperOption):
        return max(param.opts, key=len)
    return param.metavar or (param.name or "").upper()


def _type_words(exc: BaseException) -> str | None:
    """A pydantic validation error (what Typer converts values with) in our words, or None."""
    cause = exc.__cause__
    errors = getattr(cause, "errors", None)
    if not callable(errors):
        return None
    error = errors()[0]
    kind, given, bounds = error.get("type", ""), error.get("input"), error.get("ctx") or {}
    shown = repr(given) if isinstance(given, str) else str(given)
    number = str(given)
    if kind.startswith("int_"):
        return f"{shown} is not a whole number"
    if kind.startswith("float_"):
        return f"{shown} is not a number"
    if kind.startswith("bool_"):
        return f"{shown} is not true or false"
    limits = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}  # fmt: skip
    if kind in limits:
        words, key = limits[kind]
        return f"must be {words} {bounds.get(key)}, but got {number}"
    if kind in ("literal_error", "enum"):
        return f"must be {bounds.get('expected')}, but got {shown}"
    message = str(error.get("msg", "")).replace("Input should be", "must be").replace("Value error, ", "")
    return f"{message}, but got {shown}" if given is not None else message


def usage_error_line(exc: errors.ClickException) -> str:
    """A click/Typer usage error as one line: what is wrong, then which `-h` helps."""
    ctx = getattr(exc, "ctx", None)
    param = getattr(exc, "param", None)
    if isinstance(exc, errors.MissingParameter) and param is not None:
        kind = "argument" if isinstance(param, TyperArgument) else "option"
        text = f"missing {kind} {_hint(param)}" + (f" {param.metavar}" if kind == "option" and param.metavar else "")
    elif isinstance(exc, errors.NoSuchOption):
        text = f"unknown option {exc.option_name}" + (f" (did you mean {', '.join(sorted(exc.possibilities))}?)" if exc.possibilities else "")
    elif isinstance(exc, errors.BadParameter) and param is not None:
        text = f"{_hint(param)}: {_type_words(exc) or exc.message}"
    elif isinstance(exc, errors.BadOptionUsage) and ctx is not None:
        option = next((p for p in ctx.command.params if exc.option_name in getattr(p, "opts", ())), None)
        if option is not None and option.nargs > 1:
            text = f"{exc.option_name} takes {option.nargs} values: {exc.option_name} {option.metavar}"
        elif option is not None:
            text = f"{exc.option_name} needs a value: {exc.option_name} {option.metavar}"
        else:
            text = exc.format_message()
    else:
        text = exc.format_message()
        extra = re.match(r"Got unexpected extra argument(?:s|\(s\))? \((.*)\)", text)
        if extra:
            words = extra.group(1).split()
            text = f"unexpected argument{'s' if len(words) > 1 else ''} " + " ".join(repr(w) for w in words)
    text = " ".join(text.split())
    text = text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
    text = text.rstrip(".")
    if ctx is not None:
        text += f" (see '{ctx.command_path} -h')"
    return text
