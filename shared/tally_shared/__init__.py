"""Event contracts and the little code every Tally service needs."""

__version__ = "0.1.0"
