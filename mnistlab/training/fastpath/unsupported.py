"""The one way the fast path says no.

Everything it refuses is refused before any training, with this exception, so
that `--engine auto` can fall back to Keras' own fit, which trains the model
as its compile() said, rather than the fast path training another objective.
"""

from mnistlab.errors import UsageError


class Unsupported(UsageError):
    """The fast path cannot train this model (Keras' own fit can); `reason` says why."""

    def __init__(self, reason):
        super().__init__(f"the fast path cannot train this model: {reason}")
        self.reason = reason
