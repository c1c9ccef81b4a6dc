"""Entry point of the ``socle`` command.

Commands live in modules grouped by subject; each module exposes ``register(group)``. The
entry point is the only place that reads the environment (through :class:`Settings`).
"""

from __future__ import annotations

import importlib

import click

from socle import __version__
from socle.cli.output import err_console, safe
from socle.errors import ManifestError, SocleError

COMMANDS: dict[str, str] = {
    "up": "socle.cli.apps",
    "down": "socle.cli.apps",
    "server": "socle.cli.apps",
    "plan": "socle.cli.apps",
    "apply": "socle.cli.apps",
    "status": "socle.cli.apps",
    "history": "socle.cli.apps",
    "rollback": "socle.cli.apps",
    "logs": "socle.cli.logs",
    "routes": "socle.cli.routes",
    "validate": "socle.cli.manifests",
    "render": "socle.cli.manifests",
    "schema": "socle.cli.manifests",
    "operator": "socle.cli.secrets",
    "secrets": "socle.cli.secrets",
    "audit": "socle.cli.audit",
    "backup": "socle.cli.backup",
    "token": "socle.cli.tokens",
    "volume": "socle.cli.volumes",
    "services": "socle.cli.services",
    "metrics": "socle.cli.observe",
    "alerts": "socle.cli.observe",
    "silence": "socle.cli.observe",
    "slo": "socle.cli.observe",
    "source": "socle.cli.gitops",
    "sync": "socle.cli.gitops",
    "diff": "socle.cli.gitops",
    "promote": "socle.cli.gitops",
    "approve": "socle.cli.gitops",
    "firewall": "socle.cli.firewall",
    "notifier": "socle.cli.gitops",
    "notifications": "socle.cli.gitops",
    "trace": "socle.cli.traces",
}
"""Command name → module whose ``register(group)`` adds it. Modules load on first use, so
``socle plan`` does not pay for importing the secrets engine."""


class SocleGroup(click.Group):
    """Loads command modules lazily; turns every SocleError into a clear message, a hint
    and a non-zero exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(COMMANDS[cmd_name]).register(self)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ManifestError as exc:
            err_console.print(
                f"[bold red]error:[/] {len(exc.problems)} problem(s) in manifests", markup=True
            )
            for problem in exc.problems:
                err_console.print(f"  {safe(str(problem))}", markup=True, soft_wrap=True)
            if exc.hint:
                err_console.print(f"[yellow]hint:[/] {safe(exc.hint, lines=True)}", markup=True)
            raise SystemExit(exc.exit_code) from None
        except SocleError as exc:
            err_console.print(
                f"[bold red]error:[/] {safe(exc.message, lines=True)}", markup=True, soft_wrap=True
            )
            if exc.hint:
                err_console.print(
                    f"[yellow]hint:[/] {safe(exc.hint, lines=True)}", markup=True, soft_wrap=True
                )
            raise SystemExit(exc.exit_code) from None


@click.group(cls=SocleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="socle")
def cli() -> None:
    """Socle: one Git repository, one tool to provision, secure, connect and run it all.

    Start with `socle up examples/quickstart`, then `socle status`.
    """


def main() -> None:
    cli(prog_name="socle")
