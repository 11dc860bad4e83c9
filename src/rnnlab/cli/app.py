"""The Typer application every `rnnlab` command registers on."""

import typer

app = typer.Typer(
    name="rnnlab",
    help="Recurrent neural networks built from their equations: a_t = f_a(W_a x_t + U_a a_{t-1} + b_a).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
