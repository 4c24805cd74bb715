"""The errors a user can cause, as one small hierarchy.

Library code raises these with a plain one-line message that names the file or setting and the problem;
the command line (:mod:`scenedecomp.cli`) prints that line and exits 2 (130 for :class:`Interrupted`).
Anything else is a bug: the command line prints one line and the path of a log file with the traceback,
and exits 1. Existing error classes (``ConfigError``, ``DatasetError``, ``RunError``, ...) subclass these,
and also ``ValueError`` as before, so code catching either keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message is one line."""

    exit_code = 2


class BadInput(UserError):
    """An input file, folder or argument cannot be used (unreadable, damaged, out of range)."""


class BadConfig(UserError):
    """A preset, config file or ``key=value`` override is invalid."""


class BadRun(UserError):
    """A run directory or checkpoint cannot be started, found, resumed or loaded."""


class ResourceLimit(UserError):
    """A request exceeds a bound (pixels, slots, image size, batch size, file size, YAML aliases)."""


class Interrupted(UserError):
    """The user stopped the command (Ctrl-C, SIGTERM); the message says what was kept."""

    exit_code = 130


def one_line(err: BaseException, limit: int = 400) -> str:
    """The first non-empty line of ``str(err)`` (or the type's name), at most ``limit`` characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]


__all__ = ["BadConfig", "BadInput", "BadRun", "Interrupted", "ResourceLimit", "UserError", "one_line"]


class RunError(BadRun, ValueError):
    """A run cannot be started, found or loaded (one-line message)."""
