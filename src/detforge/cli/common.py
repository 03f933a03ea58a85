"""What every command shares: the consoles, and the training options generated from the
TrainConfig fields (so the CLI and the config cannot drift apart)."""

from __future__ import annotations

import inspect
import io
import tokenize
import typing

import typer
from rich.console import Console
from rich.markup import escape

from detforge.errors import DetforgeError

out = Console()


def esc(value) -> str:
    """A path (or any value) as text in a Rich line: its brackets printed, never read as
    markup (a folder named ``exp[1]`` prints as itself)."""
    return escape(str(value))


err = Console(stderr=True, soft_wrap=True)  # an error is one line, however long its path


def show(table) -> None:
    """A Rich table in a terminal; piped, plain tab-separated lines (the title, the header,
    a line a row) that keep whole paths for grep instead of wrapping them across lines."""
    if out.is_terminal:
        out.print(table)
        return
    from rich.text import Text

    def plain(cell) -> str:
        return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain

    if table.title:
        print(plain(table.title))
    print("\t".join(plain(c.header) for c in table.columns))
    for row in zip(*(c.cells for c in table.columns)):
        print("\t".join(plain(cell) for cell in row))


def field_help(cls) -> dict[str, str]:
    """``{field: its one-line comment}`` from the dataclass's source (the config documents
    each field with a trailing comment; the CLI shows exactly that)."""
    helps: dict[str, str] = {}
    name = None
    for tok in tokenize.generate_tokens(io.StringIO(inspect.getsource(cls)).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and name is None:
            name = tok.string
        elif tok.type == tokenize.COMMENT and name:
            helps.setdefault(name, tok.string.lstrip("# ").strip())
        elif tok.type == tokenize.NEWLINE:
            name = None
    return helps


def config_options(cls, skip: tuple[str, ...]) -> list[inspect.Parameter]:
    """One ``--option`` per dataclass field (default None: unset keeps the config's value);
    booleans become ``--x/--no-x`` flags, everything else is parsed by the config's loader."""
    import dataclasses

    helps = field_help(cls)
    params = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        is_bool = f.type in (bool, "bool")
        decl = f"{flag}/--no-{flag[2:]}" if is_bool else flag
        meta = None if is_bool else str(getattr(f.type, "__name__", f.type)).upper()
        opt = typer.Option(None, decl, help=helps.get(f.name, ""), show_default=False, metavar=meta)
        kind = typing.Optional[bool] if is_bool else typing.Optional[str]  # noqa: UP045
        params.append(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind)
        )
    return params


def with_options(fn, extra: list[inspect.Parameter]):
    """``fn`` with ``extra`` keyword parameters added to the signature Typer reads."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD] + extra
    fn.__signature__ = sig.replace(parameters=params)
    fn.__annotations__ = {**typing.get_type_hints(fn), **{p.name: p.annotation for p in extra}}
    return fn


def parse_sets(items: list[str] | None) -> dict:
    """``--set key=value`` (``augment.mosaic=0.5``, ``model_options.backbone=vgg16``) -> a
    nested dict of YAML-parsed values."""
    import yaml

    out_: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DetforgeError(
                f"--set {item!r}: expected key=value", "e.g. --set augment.mosaic=0.5"
            )
        node = out_
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out_


def renamed(value, old_value, old: str, new: str = "--out"):
    """The value of option ``new``, or of its spelling before 0.1.0, ``old`` (a hidden option
    or positional argument kept for one release; using it says so in one line)."""
    if old_value is None:
        return value
    if value is not None and value != old_value:
        raise DetforgeError(f"{new} and {old} name two places", f"give {new} only")
    err.print(
        f"[yellow]note:[/] {escape(old)} is now {new} ({escape(old)} is accepted until "
        "detforge 0.2)",
        highlight=False,
    )
    return old_value


def required(value, option: str = "--out"):
    """``value``, which a command needs (``option`` became an option from a positional)."""
    if value is None:
        raise DetforgeError(f"missing option {option}", f"add {option} PATH")
    return value
