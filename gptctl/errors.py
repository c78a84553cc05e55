"""The library's error types. The CLI maps them to one sentence and an exit code."""

from __future__ import annotations

# Exit codes shared by every command (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # nothing matched, a gate failed, a validation failed, a required provider is missing
EXIT_BAD_INPUT = 2  # usage, missing/unreadable file, schema or option errors


class GptctlError(Exception):
    """A problem the user can act on: `message` says what is wrong, `hint` how to fix it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str | None = None, *, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Extra lines (e.g. every schema problem, file:line: path: problem), shown after the message.
        self.details = list(details or [])

    def __str__(self) -> str:
        return self.message


class BadInput(GptctlError):
    """Bad input: a file, an option, a schema. Exit 2."""

    exit_code = EXIT_BAD_INPUT


class NothingMatched(GptctlError):
    """A selection left no model. Exit 1."""

    exit_code = EXIT_FAILED


class CheckFailed(GptctlError):
    """A gate, a validation or a required provider failed. Exit 1."""

    exit_code = EXIT_FAILED
