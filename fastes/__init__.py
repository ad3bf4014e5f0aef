"""fastes: evolution strategies, fast, on CPU cores."""

__version__ = "0.1.0"

__all__ = ["ESClassifier", "Config"]


def __getattr__(name):
    # imported lazily: scikit-learn and the kernels are not needed by every command
    if name == "ESClassifier":
        from .estimator import ESClassifier

        return ESClassifier
    if name == "Config":
        from .config import Config

        return Config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
