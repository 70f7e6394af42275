"""Exceptions vetset raises for problems a user can fix.

Every :class:`VetsetError` carries one sentence that names the file, field, option or
plugin at fault; the CLI prints it without a traceback and exits with code 2.
"""

from __future__ import annotations


class VetsetError(Exception):
    """A user-fixable problem (bad input, bad recipe, bad option). Exit code 2."""

    exit_code = 2


class RecipeError(VetsetError):
    """A recipe file or mapping failed to parse or validate."""


class DataError(VetsetError):
    """The input data (folder, CSV manifest, dataset name) cannot be used."""


class PluginError(VetsetError):
    """A plugin failed to import, registered a duplicate name or returned a bad value."""


class ChecksFailed(VetsetError):
    """One or more ``fail_on`` thresholds of a recipe were exceeded. Exit code 1."""

    exit_code = 1

    def __init__(self, failures: list[str]):
        self.failures = list(failures)
        super().__init__("fail_on thresholds exceeded: " + "; ".join(self.failures))
