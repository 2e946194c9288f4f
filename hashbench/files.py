"""Writing output files safely: one helper for every file hashbench writes outside a stage folder
(leaderboards, reports), and one translation of OS errors into messages that say what to do.

An output is written under a temporary name in its own folder and renamed over the destination in one
step, so a reader never sees half a file, a failure (a full disk, Ctrl-C) leaves the previous file as it
was, and a symlink at the destination is replaced, never written through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from pathlib import Path
from typing import Iterator

from .errors import StoreError


def explain_os_error(exc: OSError, path: Path) -> StoreError:
    """A StoreError naming ``path``, the cause and the fix."""
    if exc.errno == errno.ENOSPC:
        return StoreError(f"the disk holding {path} is full; free space and run again (finished stages are kept)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"cannot write to {path} (permission denied); choose another `results` directory")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return StoreError(f"cannot write to {path}: part of that path is a file, not a folder; choose another `results` directory")
    if exc.errno == errno.EISDIR:
        return StoreError(f"cannot write to {path}: it is a folder; give a file name")
    return StoreError(f"cannot write to {path}: {exc.strerror or exc}")


def make_folder(path: Path) -> Path:
    """``mkdir -p`` with a clear error."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise explain_os_error(exc, Path(path)) from None
    return Path(path)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it replaces ``path`` in one step.

    The temporary file is created with the permissions a plain new file would get (the umask), or the
    replaced file's, so a results folder shared between users stays readable by all of them.
    """
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"cannot write to {path}: it is a folder; give a file name")
    make_folder(path.parent)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        with contextlib.suppress(FileNotFoundError):
            old = os.lstat(path)
            if stat.S_ISREG(old.st_mode):
                os.chmod(tmp, stat.S_IMODE(old.st_mode))
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise explain_os_error(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
