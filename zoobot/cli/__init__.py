"""The ``zoobot`` command line (docs/cli.md); ``zoobot --help`` lists the commands.

How the package reads, top to bottom:

- this file: the command group, global options and the error handling of :func:`main`
  (one-line errors, full tracebacks with ``--debug``, exit codes 0 ok / 1 error / 2 usage);
- :mod:`._common`: options and helpers the commands share (backend import, catalogs, models);
- one module per command family: :mod:`.train`, :mod:`.finetune`, :mod:`.predict`
  (``predict`` and ``representations``), :mod:`.merge` (``merge-predictions``), :mod:`.evaluate`,
  :mod:`.shard`, :mod:`.export`, :mod:`.demo`, :mod:`.about` (``schemas`` and ``info``).

Deep-learning frameworks are imported inside the commands, so ``zoobot --help`` and
``zoobot schemas`` start in well under a second.
"""
from __future__ import annotations

import sys
import traceback

import click

from zoobot import __version__
from zoobot.cli._common import BACKENDS, LOG_LEVELS, STATE, configure_logging, one_line

__all__ = ["cli", "main"]

CONTEXT_SETTINGS = dict(help_option_names=["-h", "--help"], max_content_width=100)


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("--backend", type=click.Choice(BACKENDS), default="pytorch", show_default=True,
              envvar="ZOOBOT_BACKEND", help="Deep-learning framework (also env ZOOBOT_BACKEND).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="INFO",
              show_default=True, help="Logging level of zoobot (and Lightning/Keras messages).")
@click.option("--debug", is_flag=True, envvar="ZOOBOT_DEBUG",
              help="Show full tracebacks instead of one-line errors (also env ZOOBOT_DEBUG=1).")
@click.version_option(__version__, "--version", prog_name="zoobot")
def cli(backend: str, log_level: str, debug: bool) -> None:
    """zoobot: deep learning for Galaxy Zoo morphology, with PyTorch or TensorFlow.

    Start with `zoobot demo` (offline, a few minutes on a laptop CPU). Every command takes
    --help. Global options go before the command (`zoobot --backend tensorflow train ...`);
    --backend, --log-level and --debug are also accepted after it.
    """
    from zoobot.shared.pretrained import use_cli_spelling

    use_cli_spelling()  # errors about model names say --name ..., not name='...'
    STATE.backend = backend
    STATE.debug = STATE.debug or debug
    STATE.log_level = log_level.upper()
    configure_logging(STATE.log_level)


def _register_commands() -> None:
    # the command modules import nothing heavy at module level
    from zoobot.cli import about, demo, evaluate, export, finetune, merge, predict, shard, train

    for module in (demo, train, finetune, predict, merge, evaluate, shard, export, about):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``zoobot`` console script and of ``python -m zoobot``.

    Exit codes: 0 success; 1 runtime error (one line on stderr with the error's message, or the
    full traceback with ``--debug``); 2 usage error (unknown option, missing argument, bad value);
    143 / 130 interrupted by SIGTERM / SIGINT (:mod:`zoobot.shared.interrupts`: finished work is kept,
    rerun the same command to resume).
    """
    STATE.reset()
    if argv is None:
        argv = sys.argv[1:]
    STATE.debug = "--debug" in argv or STATE.env_debug()
    from zoobot.shared import interrupts

    try:
        with interrupts.raise_on_signals():
            result = cli.main(args=list(argv), prog_name="zoobot", standalone_mode=False)
    except interrupts.Interrupted as error:  # SIGTERM / SIGINT: what was finished is on disk
        click.echo(f"zoobot: {interrupts.describe(error)}", err=True)
        sys.exit(error.exit_code)
    except click.exceptions.UsageError as error:
        error.show()
        sys.exit(2)
    except click.exceptions.ClickException as error:  # e.g. click.FileError
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as error:
        sys.exit(error.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except Exception as error:  # noqa: BLE001 - the CLI's job is to report it well
        if STATE.debug:
            traceback.print_exc()
        else:
            click.echo(f"Error: {one_line(error)}  (run with --debug for the full traceback)", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
