"""The ``lifeboat`` command line: a thin layer over the engine.

Every command prints one JSON envelope on stdout with ``--output json`` (also on failure) and human text
on stderr otherwise; exit codes are documented in the README and in ``toolkit.errors``. Heavy libraries
(boto3, paramiko, python_terraform, psycopg) are imported only by the code that needs them.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from toolkit import __version__, settle
from toolkit.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    BadInput,
    ConfirmationRequired,
    Problem,
    ToolkitError,
)

_CURRENT: dict = {}  # the running command's session, for the error report


class Session:
    def __init__(self, config: str | None, output: str, yes: bool, verbose: bool):
        self.config = config
        self.output = output
        self.yes = yes
        self.verbose = verbose
        self.command = "lifeboat"
        self._console = None
        self._collected = None  # --output json: the warnings the work gave, for the envelope

    @property
    def json(self) -> bool:
        return self.output == "json"

    @property
    def console(self):
        if self._console is None:
            from toolkit.cli.output import Console

            self._console = Console(self.verbose)
        return self._console

    def events(self):
        from toolkit.cli.output import HumanEvents
        from toolkit.run.events import JsonLineEvents

        if self.json:
            if self._collected is None:
                self._collected = JsonLineEvents(sys.stderr)
            events = self._collected
        else:
            events = HumanEvents(self.console)
        events.verbose = self.verbose
        return events

    def warnings(self) -> list[str]:
        """What the work warned of (JSON output; the human view printed them as they came)."""
        return list(self._collected.warnings) if self._collected is not None else []

    def stack(self):
        from toolkit.config import stackfile

        return stackfile.load(stackfile.resolve_path(self.config))

    def engine(self):
        from toolkit.run.engine import Engine

        return Engine(self.stack(), self.events())

    def provider_with(self, on: str, *, feature: str, lacks: str, code: str):
        """TARGET's provider, which must declare ``feature`` (FEATURES); else bad input saying what it lacks."""
        provider = self.engine().provider(on)
        if not provider.supports(feature):
            raise BadInput(f"target {on} ({provider.TYPE}) {lacks}.", code=code)
        return provider

    def confirm(self, question: str) -> None:
        if self.yes:
            return
        if not sys.stdin.isatty():
            raise ConfirmationRequired(f"{question} Refusing without confirmation: no terminal to ask on.",
                                       hint="pass --yes to confirm in scripts.")
        if not click.confirm(question, err=True, default=False):
            raise ConfirmationRequired("not confirmed; nothing was changed.", code="not_confirmed")

    def emit(self, outcome) -> None:
        from toolkit.cli.output import envelope, write_stdout

        if self.json:
            write_stdout(envelope(self.command, outcome, self.warnings()))
        else:
            if outcome.human:
                outcome.human(self.console)
            for problem in outcome.errors:
                self.console.error(problem)
        if outcome.exit_code:
            raise SystemExit(outcome.exit_code)


def json_requested(argv: list[str]) -> bool:
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg in ("--output", "-o") and index + 1 < len(argv) and argv[index + 1] == "json":
            return True
        if arg in ("--output=json", "-ojson"):
            return True
    return False


def command_name(argv: list[str]) -> str:
    takes_value = {"--config", "-c", "--output", "-o"}
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in takes_value:
            skip = True
            continue
        if arg.startswith("-"):
            continue
        return arg
    return "lifeboat"


def _set(attr: str):
    def callback(ctx, param, value):
        if value is not None and value is not False:
            setattr(ctx.find_object(Session), attr, value)
    return callback


def common_options(func):
    """The global options, accepted after the command name too (`lifeboat status --on x -o json`)."""
    options = [
        click.option("--config", "-c", metavar="FILE", expose_value=False, callback=_set("config"),
                     help="Stack file (same as the global option)."),
        click.option("--output", "-o", type=click.Choice(["human", "json"]), default=None, expose_value=False,
                     callback=_set("output"), help="Output format (same as the global option)."),
        click.option("--yes", "-y", is_flag=True, default=False, expose_value=False, callback=_set("yes"),
                     help="Confirm destructive actions."),
        click.option("--verbose", "-v", is_flag=True, default=False, expose_value=False, callback=_set("verbose"),
                     help="More detail."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def envelope_command(name: str):
    """Mark a command: the session knows its name for the envelope; the function returns an Outcome."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            session = click.get_current_context().find_object(Session)
            session.command = name
            outcome = func(session, *args, **kwargs)
            session.emit(outcome)

        return common_options(wrapper)

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "-c", metavar="FILE", help="Stack file (default: $LIFEBOAT_CONFIG or ./lifeboat.yml).")
@click.option("--output", "-o", type=click.Choice(["human", "json"]), default="human", show_default=True,
              help="json: one envelope on stdout, also on failure.")
@click.option("--yes", "-y", is_flag=True, help="Confirm destructive actions (required without a terminal).")
@click.option("--verbose", "-v", is_flag=True, help="More detail, and tracebacks for internal errors.")
@click.version_option(__version__, prog_name="lifeboat")
@click.pass_context
def cli(ctx, config, output, yes, verbose):
    """Lifeboat moves a self-hosted social app between hosts, verified and resumable.

    \b
    Exit codes: 0 ok; 1 operation failed; 2 bad input (usage or stack file);
    3 another run holds the lock; 4 verification failed; 5 a provider is
    unreachable or refused the credentials; 10 plan --detailed-exitcode with
    changes pending.
    """
    ctx.obj = Session(config, output, yes, verbose)
    _CURRENT["session"] = ctx.obj


TARGET_VAR = "LIFEBOAT_TARGET"


def _quiet_stack(ctx):
    """The stack file the command will read, or None when it cannot be read (the command then says why)."""
    from toolkit.config import stackfile
    from toolkit.errors import ToolkitError

    session = ctx.find_object(Session)  # (none while the shell completes a word: the group did not run)
    config = session.config if session is not None else ctx.find_root().params.get("config")
    try:
        return stackfile.load(stackfile.resolve_path(config))
    except (ToolkitError, OSError):
        return None


def _default_target(ctx, param, value):
    """``--on`` when given; else $LIFEBOAT_TARGET; else the stack's ``default_target:``; else its only
    target. A stack of several targets and none of these: a usage error naming them (exit 2)."""
    if value:
        return value
    if os.environ.get(TARGET_VAR):
        return os.environ[TARGET_VAR]
    stack = _quiet_stack(ctx)
    if stack is None:
        return None  # the command reads the stack first and says what is wrong with it
    if stack.default_target:
        return stack.default_target
    if len(stack.targets) == 1:
        return next(iter(stack.targets))
    raise click.UsageError(f"which target? {stack.path.name} has {len(stack.targets)} "
                           f"({', '.join(stack.targets)}): name one with --on, or set default_target: in the "
                           f"stack file or {TARGET_VAR}.", ctx)


def complete_targets(ctx, param, incomplete: str):
    """Shell completion of a target name: the stack file's targets."""
    from click.shell_completion import CompletionItem

    stack = _quiet_stack(ctx)
    names = list(stack.targets) if stack is not None else []
    return [CompletionItem(n, help=stack.targets[n].type) for n in names if n.startswith(incomplete)]


def complete_services(ctx, param, incomplete: str):
    """Shell completion of a service name: the stack file's services."""
    from click.shell_completion import CompletionItem

    stack = _quiet_stack(ctx)
    names = list(stack.services) if stack is not None else []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def target_option(func):
    """``--on TARGET``: the target a command acts on (one declaration for every command); see
    :func:`_default_target` for what it is when not given."""
    return click.option("--on", "on", default=None, metavar="TARGET", callback=_default_target,
                        shell_complete=complete_targets,
                        help=f"Target from providers: (default: ${TARGET_VAR}, the stack's default_target:, "
                             "or its only target).")(func)


# ---------------------------------------------------------------------------------------------- entry point
def run() -> int:
    """The ``lifeboat`` command (pyproject's script): :func:`main`, then what it leaves is freed at exit
    without a last garbage collection over every object it ever made (see :func:`toolkit.settle`)."""
    code = main()
    settle()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["--help"]  # a bare `lifeboat` shows what it can do
    as_json = json_requested(argv)
    verbose = "--verbose" in argv or "-v" in argv
    _CURRENT.clear()
    if hasattr(sys.stderr, "reconfigure"):  # human text never fails on a character the terminal lacks
        sys.stderr.reconfigure(errors="backslashreplace")
    _unwind_on_sigterm()
    try:
        cli.main(args=argv, prog_name="lifeboat", standalone_mode=False)
        return 0
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C (and an end of input at a prompt) into Abort when it does not exit itself
        if isinstance(exc.__context__, KeyboardInterrupt):
            return interrupted(argv, as_json, terminated=isinstance(exc.__context__, Terminated))
        return report(argv, as_json, [Problem("aborted", "aborted; nothing more was done.")], EXIT_BAD_INPUT)
    except click.ClickException as exc:
        problem = Problem("usage", exc.format_message(), "see `lifeboat --help`.")
        return report(argv, as_json, [problem], EXIT_BAD_INPUT)
    except ToolkitError as exc:
        return report(argv, as_json, exc.problems, exc.exit_code)
    except KeyboardInterrupt as exc:
        return interrupted(argv, as_json, terminated=isinstance(exc, Terminated))
    except Exception as exc:  # a bug: say so plainly, keep the envelope contract
        if verbose:
            import traceback

            traceback.print_exc()
        problem = Problem("internal", f"internal error: {type(exc).__name__}: {exc}",
                          "this is a bug in Lifeboat; re-run with --verbose for the traceback and report it.")
        return report(argv, as_json, [problem], EXIT_FAILED)


RESUMABLE = ("migrate", "backup", "failover")  # journalled: --resume continues after the last finished step
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, a CI timeout, `kill`), raised where the program is so that it unwinds as for
    Ctrl-C: ``finally`` blocks run (scratch clusters stopped, locks released, writers ended)."""


def _unwind_on_sigterm() -> None:
    import signal
    import threading

    def raise_terminated(signum, frame):
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)


def interrupted(argv: list[str], as_json: bool, *, terminated: bool = False) -> int:
    """Ctrl-C (exit 130) or SIGTERM (exit 143), saying how to go on. What finished is kept (journal,
    copied data); locks were released on the way out."""
    session = _CURRENT.get("session")
    command = session.command if session is not None and session.command != "lifeboat" else command_name(argv)
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    if command in RESUMABLE:
        problem = Problem("interrupted", f"{what}; what finished is kept: re-run with --resume to continue.",
                          f"the same command with --resume (lifeboat {command} ... --resume).")
    else:
        problem = Problem("interrupted", f"{what}; re-running the command is safe and continues the work.")
    return report(argv, as_json, [problem], EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def report(argv: list[str], as_json: bool, problems: list[Problem], code: int) -> int:
    from toolkit.cli.output import Outcome, envelope, write_stdout

    command = command_name(argv)
    session = _CURRENT.pop("session", None)
    if session is not None and session.command != "lifeboat":
        command = session.command
    outcome = Outcome({}, status="error", exit_code=code, errors=problems)
    if as_json:
        write_stdout(envelope(command, outcome, session.warnings() if session is not None else ()))
    else:
        from toolkit.cli.output import Console

        console = Console()
        for problem in problems:
            console.error(problem)
    return code


def entry() -> None:  # python -m toolkit.cli (toolkit/cli/__main__.py)
    sys.exit(run())
