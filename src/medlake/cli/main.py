"""The ``medlake`` Typer application and its entry point.

:func:`run` is the console script: it turns every :class:`~medlake.errors.MedlakeError`
into one line on stderr and the error's exit code, so no command prints a traceback for
a mistake a user can make.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from medlake import __version__
from medlake import log as medlake_log
from medlake.access.context import USER_ENV, acting_as
from medlake.cli import (
    access,
    audit,
    backup,
    cohort,
    de,
    deid,
    demo,
    empi,
    extract,
    gwas,
    ingest,
    listen,
    mirror,
    person,
    qc,
    quarantine,
    rebuild,
    release,
    serve,
    synth,
    vocab,
    watch,
    workspace,
)
from medlake.cli.render import error_console
from medlake.errors import MedlakeError

app = typer.Typer(
    name="medlake",
    help="medlake: an open research data platform for hospitals (OMOP CDM lake + omics).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"medlake {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug")
    ] = 0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    as_user: Annotated[
        str | None,
        typer.Option(
            "--as",
            help=f"Run the command as this medlake user (default: ${USER_ENV}, else your login).",
            show_default=False,
        ),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(
            "--project",
            help="Work inside this research project (researchers' data, extracts, analyses).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """medlake: bring clinical records and omics into one governed research lake."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    medlake_log.configure(level)
    # Every command runs as a user: the services check this name against the workspace's
    # users (medlake.service.policy) when they are called.
    ctx.with_resource(acting_as(as_user, project=project))


workspace.register(app)
synth.register(app)
demo.register(app)
listen.register(app)
serve.register(app)
ingest.register(app)
rebuild.register(app)
extract.register(app)
gwas.register(app)
de.register(app)
app.add_typer(workspace.schema_app, name="schema")
app.add_typer(vocab.app, name="vocab")
app.add_typer(quarantine.app, name="quarantine")
app.add_typer(watch.app, name="watch")
app.add_typer(mirror.app, name="mirror")
app.add_typer(backup.app, name="backup")
app.add_typer(audit.app, name="audit")
app.add_typer(qc.app, name="qc")
app.add_typer(cohort.app, name="cohort")
app.add_typer(deid.app, name="deid")
app.add_typer(access.user_app, name="user")
app.add_typer(access.project_app, name="project")
app.add_typer(person.app, name="person")
app.add_typer(empi.app, name="empi")
app.add_typer(release.app, name="release")


def run() -> None:
    """Console-script entry point: run the app, one clear line per medlake error."""
    try:
        app(standalone_mode=False)
    except MedlakeError as error:
        error_console.print(f"[bold red]error:[/] {error.message}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        error_console.print("[bold red]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        error_console.print("[bold red]aborted[/]")
        sys.exit(1)
    except Exception as error:  # click usage errors arrive as ClickException
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    run()
