"""The heavy-import scenario: a trial function in a module that imports
numpy and parts of scipy, as a machine-learning trial does. Spawn and
forkserver children pay for these imports unless a server already has them."""

import numpy  # noqa: F401
import scipy.optimize
import scipy.signal
import scipy.stats  # noqa: F401


def trial(x: int) -> int:
    return x + 1
