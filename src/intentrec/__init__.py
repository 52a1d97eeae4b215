"""intentrec: intent-aware sequential recommendation.

First predict why a user is here (the session intent), then what they will engage with next,
as in Netflix's IntentRec (Oh et al., arXiv 2408.05353). See README.md for the quick start.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("intentrec")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
