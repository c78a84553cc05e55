"""The library's error types, and the one mapping from an outcome to an exit code.

The library raises these; `gptctl/cli/common.py` renders them (one sentence, or one JSON object under
`--json`) and exits with `exit_code_for(exc)`. Nothing else decides an exit code.
"""

from __future__ import annotations

from typing import Any

# Exit codes shared by every command (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # nothing matched, a gate failed, a validation failed, a required provider is missing
EXIT_BAD_INPUT = 2  # usage, missing/unreadable file, schema or option errors
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class GptctlError(Exception):
    """A problem the user can act on: `message` says what is wrong, `hint` how to fix it.

    `partial` is what the failed command had produced when it failed (e.g. the ranking with its nearest
    misses, a recipe summary): `--json` prints it with the error, so CI can parse every outcome.
    The exit code belongs to the class: raise the subclass that means what happened.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        details: list[str] | None = None,
        partial: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Extra lines (e.g. every schema problem, file:line: path: problem), shown after the message.
        self.details = list(details or [])
        self.partial = partial

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The `--json` form: the partial result (if any) plus error, hint, details and exit_code."""
        d: dict[str, Any] = dict(self.partial or {})
        d.update(error=self.message, hint=self.hint, exit_code=exit_code_for(self))
        if self.details:
            d["details"] = self.details
        return d


class BadInput(GptctlError):
    """Bad input: a file, an option, a schema. Exit 2."""

    exit_code = EXIT_BAD_INPUT


class NothingMatched(GptctlError):
    """A selection left no model. Exit 1."""

    exit_code = EXIT_FAILED


class CheckFailed(GptctlError):
    """A gate, a validation, a step or a required provider failed. Exit 1."""

    exit_code = EXIT_FAILED


class Interrupted(GptctlError):
    """Ctrl-C. Exit 130."""

    exit_code = EXIT_INTERRUPTED


class Unexpected(GptctlError):
    """A bug or an unexpected library failure, wrapped so the CLI renders it like any error."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}", "run again with `gptctl --debug ...` for the traceback")
        self.cause = cause

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return exit_code_for(self.cause)


def exit_code_for(exc: BaseException) -> int:
    """The exit code of a failure: 2 bad input, 1 a check failed or nothing matched, 130 interrupted.

    An unexpected exception is a bug or a library failure (exit 1), except OSError and ValueError, which
    in practice come from what the user passed (an unreadable file, a malformed value): exit 2.
    """
    if isinstance(exc, GptctlError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, (OSError, ValueError)):
        return EXIT_BAD_INPUT
    return EXIT_FAILED
