"""Exceptions a user can act on. numpy-free, torch-free: safe to import anywhere."""


class ToonSplatError(Exception):
    """An error whose message tells the user what was wrong, where, and what to do.

    The command line prints it as one line (or one JSON ``error`` event) and exits non-zero;
    the Blender add-on shows it with ``self.report({'ERROR'}, ...)``.
    """

    exit_code = 2


class FormatError(ToonSplatError):
    """A contract file (avatar, tracking) is missing, truncated, corrupted or inconsistent."""


class InputError(ToonSplatError):
    """A user-supplied input (video, image, model file, argument) cannot be used."""


class NotAvailableError(ToonSplatError):
    """A feature needs something this machine does not have (CUDA, an optional package)."""
