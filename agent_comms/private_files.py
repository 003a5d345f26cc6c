"""Files and folders only this user may touch: the checks on ``AGENT_COMMS_HOME`` and what lies under it, and the
creation of new files with mode 0600.

Every process that reads or writes under the home applies these (the mesh, the bridges and the hooks of the
harnesses), so a folder, file or socket planted by another user is refused instead of trusted:

* a folder is used only if it belongs to this user and nobody else may enter it (no group or other permission
  bits); below the home, a symbolic link in place of a folder is refused too;
* a file is read only if, opened without following a symbolic link, it is a regular file of this user that nobody
  else may write;
* a Unix socket is used only if it is a socket of this user (not a link), and nobody else may use it;
* a new file (a temporary file, a backup, a copy) is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and mode 0600
  before any byte is written: nobody else can read it at any moment, and a link planted at its path is never
  followed. A file that is rewritten is written to a new temporary file beside it and renamed into place.

Standard library only: the hooks import this on every prompt and tool call.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Final

__all__ = [
    "PRIVATE_MODE",
    "UnsafePathError",
    "check_private_dir",
    "check_private_socket",
    "copy_private",
    "create_private_file",
    "ensure_private_dir",
    "read_private_file",
    "write_private_file",
]

#: The mode of every file created here.
PRIVATE_MODE: Final = 0o600
_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK: Final = 1 << 16


class UnsafePathError(Exception):
    """A folder, file or socket is not this user's alone; the message says which and what to do."""


def _owner_and_mode(path: Path, info: os.stat_result, *, what: str, fix: str) -> None:
    if info.st_uid != os.getuid():
        raise UnsafePathError(f"{path} belongs to another user (uid {info.st_uid}); refusing to use it")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise UnsafePathError(f"{path} is {what} other users (mode {mode:04o}); run: chmod {fix} {path}")


def check_private_dir(path: Path, *, follow: bool = False) -> None:
    """Check that the folder ``path`` is this user's and closed to everyone else; :class:`UnsafePathError` if not.

    ``follow``: accept a symbolic link to such a folder (for the home itself, which a user may well link); folders
    below the home must be real folders. :class:`FileNotFoundError` if it does not exist.
    """
    info = os.stat(path) if follow else os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(f"{path} is a symbolic link, not a folder; refusing to use it")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{path} is not a folder; refusing to use it")
    _owner_and_mode(path, info, what="accessible to", fix="700")


def ensure_private_dir(path: Path, *, follow: bool = False) -> Path:
    """Create the folder ``path`` (mode 0700, parents too) if it is missing, then :func:`check_private_dir` it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private_dir(path, follow=follow)
    return path


def read_private_file(path: Path, limit: int = 1 << 20) -> bytes:
    """The contents of the file ``path`` (at most ``limit`` bytes), if it is this user's regular file that nobody
    else can write; :class:`UnsafePathError` if not (a symbolic link included), :class:`OSError` if it cannot be
    opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(f"{path} is a symbolic link; refusing to read it") from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(f"{path} is not a regular file; refusing to read it")
        if info.st_uid != os.getuid():
            raise UnsafePathError(f"{path} belongs to another user (uid {info.st_uid}); refusing to read it")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o022:
            raise UnsafePathError(f"{path} is writable by other users (mode {mode:04o}); refusing to read it")
        chunks: list[bytes] = []
        size = 0
        while size < limit and (chunk := os.read(fd, min(_CHUNK, limit - size))):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_private_socket(path: Path) -> None:
    """Check that ``path`` is a Unix socket of this user that nobody else may use, in a folder of this user closed
    to everyone else; :class:`UnsafePathError` if not."""
    check_private_dir(path.parent)
    info = os.lstat(path)
    if not stat.S_ISSOCK(info.st_mode):
        raise UnsafePathError(f"{path} is not a socket; refusing to connect to it")
    _owner_and_mode(path, info, what="usable by", fix="600")


def create_private_file(path: Path) -> int:
    """Create the new file ``path`` with mode 0600 and open it for writing; its descriptor.

    :class:`FileExistsError` if anything (a file, a link, dangling or not) is already there: nothing is followed or
    overwritten.
    """
    return os.open(path, _CREATE, PRIVATE_MODE)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_private_file(path: Path, data: bytes, *, mode: int = PRIVATE_MODE) -> None:
    """Replace the file ``path`` with ``data`` atomically (a reader sees the old file or the new one).

    The data goes to a new temporary file beside ``path``, created with :func:`create_private_file` under an
    unpredictable name; it gets ``mode`` (0600 unless asked otherwise) only once written, then is renamed into
    place. The temporary file never outlives a failure.
    """
    while True:
        temporary = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            fd = create_private_file(temporary)
        except FileExistsError:
            continue
        break
    try:
        try:
            _write_all(fd, data)
            if mode != PRIVATE_MODE:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def copy_private(source: Path, target: Path) -> None:
    """Copy the file ``source`` (a link to it is fine) to the new file ``target``, created 0600 before any byte is
    copied (:func:`create_private_file`: :class:`FileExistsError` if ``target`` exists, even as a link)."""
    with source.open("rb") as reader:
        fd = create_private_file(target)
        try:
            while chunk := reader.read(_CHUNK):
                _write_all(fd, chunk)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise
        os.close(fd)
