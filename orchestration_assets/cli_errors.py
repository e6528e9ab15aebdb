"""The CLI's one error type, in its own module so every command module raises the same class.

(``python -m orchestration_assets.cli`` runs cli.py as ``__main__``: a class defined there
would be a different class from the one command modules import.)
"""


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit code 2."""
