"""The Typer application every `rnnlab` command registers on."""

from importlib.metadata import PackageNotFoundError, version

import typer
from typer import core

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
