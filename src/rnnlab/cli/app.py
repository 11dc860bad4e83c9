"""The Typer application every `rnnlab` command registers on."""

from importlib.metadata import PackageNotFoundError, version

import typer
from rich.text import Text
from typer import core, rich_utils


def fail(message: str) -> None:
    """Print one clear error line (Rich markup) on stderr and exit with status 2 (wrong usage or input)."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


app = typer.Typer(
    name="rnnlab",
    help="Recurrent neural networks built from their equations: a_t = f_a(W_a x_t + U_a a_{t-1} + b_a).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)

_type_of = core.TyperOption.display_type_rich


def _flag_takes_no_value(self, ctx):
    """A switch (--json, --help, --bidirectional/--unidirectional) shows no type: it takes no value."""
    return None if self.is_flag else _type_of(self, ctx)


core.TyperOption.display_type_rich = _flag_takes_no_value

_default_of = core.TyperOption._get_default_string


def _default_said(self, *, ctx, show_default_is_str, default_value):
    """Every default shown: a switch that is off says `off`; a default given as text reads as written."""
    if show_default_is_str:
        return str(self.show_default)
    if self.is_flag and not self.secondary_opts and default_value is False and not self.is_eager:
        return "off"
    return _default_of(self, ctx=ctx, show_default_is_str=show_default_is_str, default_value=default_value)


core.TyperOption._get_default_string = _default_said


def _folded(make):
    """A help cell that folds a long word (--freeze-embeddings, a URL) onto the next line instead of cutting it
    with an ellipsis: help fits 80 columns and leaves nothing out."""

    def make_folded(*args, **kwargs):
        out = make(*args, **kwargs)
        for part in getattr(out, "renderables", [out]):
            if isinstance(part, Text):
                part.overflow = "fold"
        return out

    return make_folded


if hasattr(rich_utils, "_get_parameter_help"):
    rich_utils._get_parameter_help = _folded(rich_utils._get_parameter_help)
for _name in ("highlighter", "negative_highlighter"):
    if hasattr(rich_utils, _name):
        setattr(rich_utils, _name, _folded(getattr(rich_utils, _name)))


def _version(value: bool | None) -> None:
    if value:
        try:
            typer.echo(f"rnnlab {version('rnnlab')}")
        except PackageNotFoundError:  # pragma: no cover  (run from a tree that was never installed)
            typer.echo("rnnlab (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    show_version: bool | None = typer.Option(None, "--version", callback=_version, is_eager=True,
                                      help="Print rnnlab's version and exit."),
) -> None:
    """Recurrent neural networks built from their equations: a_t = f_a(W_a x_t + U_a a_{t-1} + b_a)."""
