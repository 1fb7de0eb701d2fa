"""The error type for problems a user can fix."""

from __future__ import annotations


class VaebicError(Exception):
    """A problem the user can fix (bad params, missing file, diverged training, ...).

    Its message is printed as is, without a traceback, unless VAEBIC_DEBUG=1.
    """
