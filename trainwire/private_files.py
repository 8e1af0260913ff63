"""Private files: what trainwire creates under its data directory is for its owner's eyes only.

Prompts and completions sit in the bus logs, the spool, the rejected files and the datasets,
and a lock file anyone could take would block the workers. So every directory trainwire
creates is made ``0700`` and every file ``0600``, whatever the process umask (which can only
take permissions away). Files and directories that already exist keep their mode.

Files that code trainwire calls creates itself (chdb's data) sit in such a directory; the
``trainwire`` command also sets its umask to ``077`` (:func:`make_process_private`), so they are
``0600`` too when a trainwire command creates them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path | str) -> Path:
    """Create ``path`` and any missing parents as ``0700`` directories; return it as a Path."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
    return path


def make_process_private() -> None:
    """Make every file and directory this process creates from now on private (umask ``077``).

    For trainwire's own commands only: a library call never changes the umask of its host program.
    """
    os.umask(0o077)


def private_opener(path: str | bytes | os.PathLike[str], flags: int) -> int:
    """An ``opener`` for :func:`open` that creates files ``0600``."""
    return os.open(path, flags, FILE_MODE)


def open_private(path: Path | str, mode: str, **kwargs: Any) -> IO[Any]:
    """:func:`open`, creating the file ``0600`` (and its folder ``0700``) when it does not exist."""
    path = Path(path)
    private_dir(path.parent)
    return open(path, mode, opener=private_opener, **kwargs)


def replace_private(path: Path | str, data: bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` at once: write a ``0600`` temporary file, fsync it, rename.

    ``fsync=False`` skips the fsync where surviving a crash of the process is enough.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open_private(tmp, "wb") as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
