"""Errors a user can act on. The CLI prints their message (no traceback) and exits 2."""


class InputError(Exception):
    """The input (file, config, model URI) cannot be used at all."""
