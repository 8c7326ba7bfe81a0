"""The one error tree of harness.

Core code raises these and never prints or exits; the CLI turns them into one
paragraph on stderr and the exit code they carry.
"""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_HARNESS = 125
EXIT_DENIED = 126


class HarnessError(Exception):
    """Root of every error harness reports to the user.

    The message is one paragraph that names the file, key or value at fault
    and the fix.
    """

    exit_code: int = EXIT_HARNESS

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(HarnessError):
    """A configuration file or value is wrong.

    Attributes:
        path: the file at fault, when there is one.
        key: the dotted key at fault, when there is one.
    """

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.key = key


class UsageError(HarnessError):
    """The command line itself is wrong (exit code 2)."""

    exit_code = EXIT_USAGE


class ManagedConstraintError(ConfigError):
    """A request would go below the floor an administrator set in a managed file."""


class UnknownProfileError(ConfigError):
    """The named profile is neither built in nor a user profile file."""


class PolicyDenied(HarnessError):
    """A command was denied or forbidden by policy (exit code 126).

    Attributes:
        reason: why, naming the rule or the answer.
        feedback: text a human gave with the denial, passed back to the requester.
    """

    exit_code = EXIT_DENIED

    def __init__(self, message: str, *, reason: str, feedback: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.feedback = feedback


class AuditError(HarnessError):
    """The audit log cannot be written or does not verify."""


class BackendError(HarnessError):
    """A sandbox backend (engine, VM) failed or cannot be used."""


class BackendUnavailable(BackendError):
    """The backend's engine is missing or down; the message gives the command that fixes it."""


class CommandFailed(HarnessError):
    """A helper command harness ran itself (not the user's command) failed."""

    def __init__(self, argv: tuple[str, ...], returncode: int, stdout: str, stderr: str) -> None:
        import shlex

        detail = (stderr or stdout).strip()
        tail = "\n".join(detail.splitlines()[-20:])
        super().__init__(
            f"`{shlex.join(argv)}` exited with code {returncode}" + (f":\n{tail}" if tail else "")
        )
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
