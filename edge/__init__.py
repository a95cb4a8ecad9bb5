"""reservoir-edge: the edge gateway for small-reservoir dam-safety monitoring."""

__version__ = "0.1.0"
