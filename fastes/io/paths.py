"""Paths a user gives: files fastes reads and files it writes outside a run folder.

Every read goes through :func:`regular_file` or :func:`read_bytes` (a regular file, not a
folder, device or FIFO, and not larger than fits in memory), and every output path given
on the command line through :func:`check_output_path`, so a bad path is a one-line error
raised as the caller's error class before anything is read or written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import FastesError, RunFolderError


def regular_file(path, what: str, error: type[FastesError]) -> Path:
    """``path`` as a Path, if it names a readable regular file (symlinks followed)."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as exc:  # a symlink loop, a name too long, a folder without access ...
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {path} is not a regular file (a device, FIFO or socket)")
    return path


def read_bytes(path, what: str, error: type[FastesError], max_bytes: int | None = None) -> bytes:
    """The contents of a regular file of at most ``max_bytes`` (default: available memory)."""
    from ..memory import available_bytes, format_bytes

    path = regular_file(path, what, error)
    limit = available_bytes() if max_bytes is None else max_bytes
    size = path.stat().st_size
    if size > limit:
        raise error(f"{what} {path} is {format_bytes(size)}, more than the {format_bytes(limit)} it may be")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def output_files(stem, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """The files named ``stem`` plus each suffix, each checked by :func:`check_output_path`:
    the name is taken as given (``sweep-0.1`` gives ``sweep-0.1.md``), never cut at a dot."""
    if not str(stem):
        raise RunFolderError(f"{what} is empty; give a file name without its extension")
    return {suffix: check_output_path(Path(f"{stem}{suffix}"), what) for suffix in suffixes}


def check_output_path(path, what: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """Check that a file can be written at ``path`` (its folder exists and is writable,
    it is not a folder, and, with ``suffixes``, its extension is one of them)."""
    path = Path(path)
    if suffixes is not None and path.suffix.lower().lstrip(".") not in suffixes:
        raise RunFolderError(
            f"{what} {path}: cannot write a {path.suffix or 'file without an extension'!r} file; "
            f"end the name with one of: {', '.join('.' + s for s in suffixes)}"
        )
    folder = path.parent
    if not folder.is_dir():
        raise RunFolderError(f"{what} {path}: folder {folder} does not exist; create it first or choose another path")
    if path.is_dir():
        raise RunFolderError(f"{what} {path} is a folder; give a file name")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunFolderError(f"{what} {path}: folder {folder} is not writable; choose another path")
    return path
