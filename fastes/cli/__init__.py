"""The ``fastes`` command line: its parser and commands (:mod:`.main`), live progress,
``fastes bench``, ``fastes compare``, and using a trained model (evaluate, predict, plot)."""

from .main import entry, main

__all__ = ["entry", "main"]
