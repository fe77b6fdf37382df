"""Errors that fedmodel raises for bad user input.

A :class:`ConfigError` says what was expected and what was received, in one line. The command line
turns it into ``fedmodel: error: <message>`` and exit code 2, after undoing any partial output.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input: an unknown name, a value out of range, a missing file, a shape mismatch."""
