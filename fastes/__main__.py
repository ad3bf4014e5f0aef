"""``python -m fastes``: the ``fastes`` command, for environments without its console script."""

from .cli.main import entry

if __name__ == "__main__":
    entry()
