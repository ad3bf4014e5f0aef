"""fastes: evolution strategies, fast, on CPU cores."""

__version__ = "0.1.0"
