"""Files the package reads and writes: the cache folder, safe file names, regular-file checks and
atomic writes. Every path the package writes (indexes, embedding caches, trained models, the demo
PNG) goes through :func:`atomic_write`; every index or cache file it reads goes through
:func:`read_regular`. Chapter 02 explains why (bad input loses nothing); chapter 08 uses them to
save indexes.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import UnsafePathError


def cache_dir() -> Path:
    """Where embeddings, indexes and trained models are cached: ``$IMAGE_SEARCH_CACHE`` or
    ``$XDG_CACHE_HOME/image_search`` (default ``~/.cache/image_search``); never the working
    directory. Created on first use. Chapter 09."""
    env = os.environ.get("IMAGE_SEARCH_CACHE")
    base = (
        Path(env)
        if env
        else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "image_search"
    )
    base = base.expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    return base


def safe_name(name: str) -> str:
    """``name`` as a file name: letters, digits, ``-``, ``_`` and ``.`` kept, anything else
    ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def path_kind(mode: int) -> str:
    """What an ``os.stat`` mode is, in words: "a regular file", "a directory", "a FIFO", ..."""
    for test, words in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return words
    return "not a regular file"


def _real(path: str | Path) -> Path:
    """``path`` with every symlink resolved; a symlink loop is an :class:`UnsafePathError`."""
    try:
        return Path(path).expanduser().resolve(strict=False)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        raise UnsafePathError(f"{path} is a symlink loop") from None
    except OSError as e:
        if e.errno == 40:  # ELOOP
            raise UnsafePathError(f"{path} is a symlink loop") from None
        raise


def check_write_target(path: str | Path) -> Path:
    """The real path (symlinks resolved) that a write to ``path`` replaces, refusing a target that
    exists and is not a regular file: writing an index to ``/dev/null`` or a FIFO must never replace
    it with a file."""
    real = _real(path)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as e:
        raise UnsafePathError(f"cannot write {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise UnsafePathError(
            f"refusing to write {path}: it is {path_kind(mode)}, not a regular file"
        )
    return real


def _umask() -> int:
    """The process umask, read without changing it (Linux), else by the set-and-restore idiom."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file so that readers see the old file or the complete new one, never a part:
    ``write(f)`` fills a temporary file in the same folder, which is flushed, fsynced and renamed
    over the target. The file gets the usual permissions (``0o666`` minus the umask). A target that
    exists and is not a regular file is refused; the temporary file never survives a failure.
    Returns the real path written. Chapter 08."""
    real = check_write_target(path)
    real.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        check_write_target(real)  # it may have been replaced by something else meanwhile
        os.replace(tmp, real)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(real.parent)
    return real


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda f: f.write(data))


def read_regular(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``. Symlinks are resolved first; a FIFO,
    device, directory or socket is refused without opening it (opening a FIFO blocks, reading
    ``/dev/zero`` never ends), and so is a file larger than ``max_bytes``. Chapter 08."""
    real = _real(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"{path} is {path_kind(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise UnsafePathError(f"{path} is {st.st_size:,} bytes, over the {max_bytes:,}-byte limit")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(
        real, flags
    )  # O_NONBLOCK: even a file swapped for a FIFO since the stat cannot block
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UnsafePathError(f"{path} is not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafePathError(f"{path} grew over the {max_bytes:,}-byte limit while being read")
    return data


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = [
    "cache_dir",
    "safe_name",
    "path_kind",
    "check_write_target",
    "atomic_write",
    "atomic_write_bytes",
    "read_regular",
]
