"""The two kinds of failure a user can meet, and the exit codes they map to.

Everything mnistlab raises on purpose is a MnistlabError with a message that
says what is wrong and what to do; the CLI prints it on one line.
"""


class MnistlabError(Exception):
    """A runtime failure caused by the user's data, files or environment (exit 1)."""

    exit_code = 1


class UsageError(MnistlabError, ValueError):
    """A wrong option or parameter value (exit 2, like argparse's own errors)."""

    exit_code = 2


class DataError(MnistlabError):
    """A dataset file that is missing, corrupt or not what it claims to be."""


class TooLarge(MnistlabError):
    """An input over a size limit: a file over the byte cap or an image over the pixel cap
    (the web app answers it with HTTP 413)."""


def first_line(e):
    """An exception's message cut to its first line, for the one-line errors mnistlab gives."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
