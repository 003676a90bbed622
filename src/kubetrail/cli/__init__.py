"""The `kubetrail` command: global options, the command groups, and error translation.

Library errors (:class:`~kubetrail.errors.KubetrailError`) become a message on stderr and
their exit code, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ..errors import KubetrailError
from .context import AppContext

app = typer.Typer(
    name="kubetrail",
    help="Collect Kubernetes audit logs into an embedded archive and answer who did what.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kubetrail {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Archive location (env KUBETRAIL_DATA_DIR; default: "
        "~/.local/share/kubetrail).", show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Config file (env KUBETRAIL_CONFIG; default ./kubetrail.yaml).",
        show_default=False)] = None,
    no_progress: Annotated[bool, typer.Option(
        "--no-progress", help="Never show progress bars.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    ctx.obj = AppContext(data_dir=data_dir, config_path=config,
                         progress=False if no_progress else None)


def _register() -> None:
    from . import detect, evidence, follow, ingest, policy, query, serve, simulate

    for module in (ingest, follow, query, simulate, policy, detect, serve, evidence):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and turn our errors into messages and exit codes."""
    try:
        app(args=argv, prog_name="kubetrail")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KubetrailError as exc:
        print(f"kubetrail: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kubetrail: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); not an error
        return 0
    except OSError as exc:  # the last resort: the library turns the ones it expects into ours
        name = f" {exc.filename}" if exc.filename else ""
        print(f"kubetrail: error:{name}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
