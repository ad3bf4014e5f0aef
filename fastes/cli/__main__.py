"""``python -m fastes.cli``: the ``fastes`` command."""

from .main import entry

entry()
