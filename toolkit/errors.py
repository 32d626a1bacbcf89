"""One root error and one subclass per area; each carries what the user needs to act.

The CLI maps every ``ToolkitError`` to a documented exit code (see README "Exit codes"). Nothing else
reaches the user as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Documented, stable exit codes.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3
EXIT_VERIFY = 4
EXIT_UNREACHABLE = 5
EXIT_PLAN_CHANGES = 10


@dataclass
class Problem:
    """One reportable problem: a code for machines, a message and a hint for people."""

    code: str
    message: str
    hint: str | None = None
    file: str | None = None
    line: int | None = None
    key: str | None = None

    def as_dict(self) -> dict:
        out = {"code": self.code, "message": self.message, "hint": self.hint}
        for name in ("file", "line", "key"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def render(self) -> str:
        text = self.message
        if self.hint:
            text += f" Hint: {self.hint}"
        return text


class Warned(str):
    """A warning: its text (printed and listed as it is: it is a str) and a code for machines
    (``plan -o json`` lists ``{"code", "message"}``)."""

    code: str

    def __new__(cls, message: str, code: str = "warning") -> Warned:
        made = super().__new__(cls, message)
        made.code = code
        return made


def warning_dict(warning: str) -> dict:
    """``{"code", "message"}`` of a warning (a plain string's code is "warning")."""
    return {"code": getattr(warning, "code", "warning"), "message": str(warning)}


class ToolkitError(Exception):
    """Root of every error Lifeboat raises on purpose."""

    exit_code = EXIT_FAILED
    code = "failed"

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code:
            self.code = code

    @property
    def problems(self) -> list[Problem]:
        return [Problem(self.code, self.message, self.hint)]


class BadInput(ToolkitError):
    """Usage errors and anything wrong in what the user gave us. Nothing was changed."""

    exit_code = EXIT_BAD_INPUT
    code = "bad_input"


class ManyProblems(BadInput):
    """Several problems of one kind found in one pass (every missing secret, not the first)."""

    def __init__(self, issues: list[Problem], *, code: str):
        self.issues = list(issues)
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(issues[0].message + more, hint=issues[0].hint, code=code)

    @property
    def problems(self) -> list[Problem]:
        return list(self.issues)

    def __str__(self) -> str:
        return "\n".join(p.render() for p in self.issues)


@dataclass
class StackFileError(ManyProblems):
    """The stack file is invalid; carries every problem found, each with file, line and key."""

    path: str
    issues: list[Problem] = field(default_factory=list)

    def __post_init__(self):
        count = len(self.issues)
        first = self.issues[0].message if self.issues else "invalid stack file"
        more = f" (and {count - 1} more)" if count > 1 else ""
        BadInput.__init__(self, first + more, code="stack.invalid")


class ConfirmationRequired(BadInput):
    code = "confirmation_required"


class LockHeld(ToolkitError):
    """Another run holds the lock on this stack and target."""

    exit_code = EXIT_LOCKED
    code = "lock.held"


class VerificationFailed(ToolkitError):
    """Data on two sides does not match."""

    exit_code = EXIT_VERIFY
    code = "verify.mismatch"


class ProviderUnreachable(ToolkitError):
    """A provider (or a host of it) cannot be reached, or refused the credentials."""

    exit_code = EXIT_UNREACHABLE
    code = "provider.unreachable"


class ProviderError(ToolkitError):
    """A provider could not do what was asked; the message says what and where."""

    code = "provider.failed"


class CommandFailed(ToolkitError):
    """A command on a host exited non-zero. Carries host, argv, exit code and the output tail."""

    code = "command.failed"

    def __init__(self, host: str, argv: list[str], exit_code: int, stdout: str = "", stderr: str = "",
                 hint: str | None = None):
        self.host = host
        self.argv = list(argv)
        self.returncode = exit_code
        self.stdout_tail = tail(stdout)
        self.stderr_tail = tail(stderr)
        # a program passed inline (python3 -c ...) is named by its size, not pasted into the message
        shown = " ".join(a if len(a) <= 200 else f"<{len(a)} characters>" for a in map(str, self.argv))
        output = self.stderr_tail or self.stdout_tail
        message = f"on {host}: `{shown}` " + (f"exited with {exit_code}" if exit_code else "ended without answering")
        if output:
            message += f"; output ends with:\n{output}"
        super().__init__(message, hint=hint)


def tail(text: str | bytes | None, lines: int = 15, limit: int = 2000) -> str:
    """The last few lines of command output, for error messages."""
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kept = "\n".join(text.rstrip().splitlines()[-lines:])
    return kept[-limit:]
