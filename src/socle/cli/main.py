"""Entry point of the ``socle`` command.

Commands live in modules grouped by subject; each module exposes ``register(group)``. The
entry point is the only place that reads the environment (through :class:`Settings`).
"""

from __future__ import annotations

import importlib

import click
from rich.markup import escape

from socle import __version__
from socle.cli.output import err_console
from socle.errors import ManifestError, SocleError

COMMAND_MODULES: list[str] = [
    "socle.cli.apps",
    "socle.cli.secrets",
    "socle.cli.manifests",
]


class SocleGroup(click.Group):
    """Turns every SocleError into a clear message, a hint and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ManifestError as exc:
            err_console.print(
                f"[bold red]error:[/] {len(exc.problems)} problem(s) in manifests", markup=True
            )
            for problem in exc.problems:
                err_console.print(f"  {escape(str(problem))}", markup=True, soft_wrap=True)
            if exc.hint:
                err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", markup=True)
            raise SystemExit(exc.exit_code) from None
        except SocleError as exc:
            err_console.print(
                f"[bold red]error:[/] {escape(exc.message)}", markup=True, soft_wrap=True
            )
            if exc.hint:
                err_console.print(
                    f"[yellow]hint:[/] {escape(exc.hint)}", markup=True, soft_wrap=True
                )
            raise SystemExit(exc.exit_code) from None


@click.group(cls=SocleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="socle")
def cli() -> None:
    """Socle: one Git repository, one tool to provision, secure, connect and run it all.

    Start with `socle up examples/quickstart`, then `socle status`.
    """


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(cli)


def main() -> None:
    cli(prog_name="socle")
