"""The content-addressed artifact store.

A stage lives in ``<results>/stages/<kind>/<key>/``. It is written in a temporary sibling folder and
renamed into place only after its manifest is written, so a killed run never leaves a stage that looks
finished. The manifest records the stage's config, versions, git commit, device, timings, metrics and
a SHA-256 per file; a file that no longer matches is reported and the stage recomputed.
Tensors are saved with ``torch.save`` and always read back with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import StoreError, warn
from .files import explain_os_error

MANIFEST = "manifest.json"
UNREADABLE = {"corrupt": True}  # what Store.manifest returns for a manifest it cannot use


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class StageWriter:
    """Collects a stage's files in a temporary folder; :meth:`Store.open_stage` commits it."""

    def __init__(self, tmp: Path):
        self.dir = tmp
        self.manifest: dict[str, Any] = {"metrics": {}, "logs": {}}

    def path(self, name: str) -> Path:
        return self.dir / name

    def save(self, name: str, obj: Any) -> None:
        """Save tensors / dicts of tensors / plain data (loadable with weights_only=True)."""
        torch.save(obj, self.dir / name)


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._passed: dict[Path, tuple[int, int, str]] = {}  # files whose checksum passed, by their stat
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ layout
    def stage_dir(self, kind: str, key: str) -> Path:
        return self.root / "stages" / kind / key

    def ensure_writable(self) -> None:
        try:
            (self.root / "stages").mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{uuid.uuid4().hex}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise explain_os_error(exc, self.root) from None

    # ------------------------------------------------------------------ reading
    def manifest(self, kind: str, key: str) -> dict[str, Any] | None:
        """The stage's manifest; None when it is not computed, ``UNREADABLE`` when the file cannot be
        read or parsed or is not of the shape :meth:`open_stage` writes (such a stage is recomputed)."""
        path = self.stage_dir(kind, key) / MANIFEST
        try:
            manifest = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # ValueError: bad JSON or bad UTF-8
            return dict(UNREADABLE)
        return manifest if _well_formed(manifest) else dict(UNREADABLE)

    def verify(self, kind: str, key: str) -> str | None:
        """None when the stage is complete and every file matches its checksum, else what is wrong."""
        manifest = self.manifest(kind, key)
        if manifest is None:
            return "not computed"
        if manifest.get("corrupt"):
            return "its manifest is unreadable"
        for name in manifest["files"]:
            problem = self.verify_file(kind, key, name, manifest)
            if problem is not None:
                return problem
        return None

    def verify_file(self, kind: str, key: str, name: str, manifest: dict[str, Any] | None = None) -> str | None:
        """None when ``name`` matches the size and SHA-256 its stage's manifest records, else what is wrong.
        A file is hashed again only when its size or modification time changed since it last passed."""
        manifest = manifest or self.manifest(kind, key)
        if manifest is None or manifest.get("corrupt"):
            return "its manifest is missing or unreadable"
        meta = manifest["files"].get(name)
        if meta is None:
            return f"file {name} is not listed in its manifest"
        path = self.stage_dir(kind, key) / name
        try:
            info = path.stat()
        except FileNotFoundError:
            return f"file {name} is missing"
        seen = (info.st_size, info.st_mtime_ns, meta["sha256"])
        if self._passed.get(path) == seen:
            return None
        if info.st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
            return f"file {name} does not match its checksum (corrupt or truncated)"
        self._passed[path] = seen
        return None

    def is_done(self, kind: str, key: str) -> bool:
        manifest = self.manifest(kind, key)  # read once: `plan` calls this for every stage
        return manifest is not None and not manifest.get("corrupt")

    def load(self, kind: str, key: str, name: str) -> Any:
        """A file of a finished stage, checked against its manifest's checksum first."""
        path = self.stage_dir(kind, key) / name
        problem = self.verify_file(kind, key, name)
        if problem is not None:
            raise StoreError(f"stage {kind}/{key}: {problem}; run the benchmark again to recompute it")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise StoreError(f"stage {kind}/{key} has no file {name}; run the benchmark again to recompute it") from None
        except Exception as exc:
            raise StoreError(f"{path} is corrupt ({exc.__class__.__name__}); delete the folder or run with --force") from None

    def discard(self, kind: str, key: str) -> None:
        """Move a broken stage aside (kept for inspection) so it is recomputed."""
        folder = self.stage_dir(kind, key)
        if folder.exists():
            try:
                folder.rename(folder.with_name(f".broken-{key}-{int(time.time())}-{uuid.uuid4().hex[:6]}"))
            except OSError as exc:  # e.g. a folder of a shared results directory that another user owns
                raise explain_os_error(exc, folder.parent) from None

    def finished_stages(self, kind: str, warn: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
        """(key, manifest) of each stage of ``kind`` with a usable manifest; the others are skipped, with
        a warning unless ``warn`` is False."""
        folder = self.root / "stages" / kind
        if not folder.is_dir():
            return
        for child in sorted(folder.iterdir()):
            if child.name.startswith("."):
                continue
            manifest = self.manifest(kind, child.name)
            if manifest is None or manifest.get("corrupt"):
                if warn:
                    self.warn_skipped(kind, child.name, "its manifest is missing or unreadable")
            else:
                yield child.name, manifest

    def warn_skipped(self, kind: str, key: str, problem: str) -> None:
        """Say (once per stage) that a stage is left out of what is being read, and why."""
        if f"{kind}/{key}" not in self._warned:
            self._warned.add(f"{kind}/{key}")
            warn(f"stage {kind}/{key} is skipped: {problem}; run the benchmark again to recompute it")

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """An exclusive lock per stage (released by the OS when its holder dies)."""
        path = self.root / "locks" / f"{kind}-{key}.lock"
        # Opened read-only, never truncated and never through a symlink: a lock file is only a name to
        # flock, it may belong to another user of a shared results folder, and a planted link must not
        # let a run clobber the file it points to.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreError(f"{path} is a symbolic link; delete it (lock files are recreated)") from None
            raise explain_os_error(exc, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @contextlib.contextmanager
    def open_stage(self, kind: str, key: str, config: dict[str, Any]) -> Iterator[StageWriter]:
        """Write a stage atomically: files go to a temporary folder that is renamed into place on success
        and removed on any failure (including KeyboardInterrupt)."""
        final = self.stage_dir(kind, key)
        tmp = final.with_name(f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            tmp.mkdir(parents=True)
        except OSError as exc:
            raise explain_os_error(exc, tmp.parent) from None
        writer = StageWriter(tmp)
        started = time.time()
        try:
            yield writer
            files = {}
            for path in sorted(tmp.rglob("*")):
                if path.is_file():
                    files[str(path.relative_to(tmp))] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
            from . import __version__

            manifest = {
                "kind": kind,
                "key": key,
                "config": config,
                "hashbench_version": __version__,
                "torch_version": torch.__version__,
                "python": platform.python_version(),
                "host": platform.node(),
                "git_commit": git_commit(),
                "started": started,
                "seconds": time.time() - started,
                **writer.manifest,
                "files": files,
            }
            # The manifest is written last inside tmp; the rename then publishes the stage in one step.
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            if final.exists():
                shutil.rmtree(final)  # only a broken leftover can be here: callers check is_done first
            os.replace(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise explain_os_error(exc, final) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def remove_empty_folders(self) -> None:
        """Remove the empty folders of the results folder, itself included when nothing is left in it
        (after a run that failed before computing anything). Files are never removed."""
        for folder in sorted(self.root.rglob("*"), reverse=True) + [self.root]:
            if folder.is_dir() and not folder.is_symlink():
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def clean_temporaries(self) -> int:
        """Remove temporary folders left by killed runs; returns how many."""
        removed = 0
        stages = self.root / "stages"
        if stages.is_dir():
            for tmp in stages.glob("*/.tmp-*"):
                pid = tmp.name.split("-")[-2] if tmp.name.count("-") >= 3 else ""
                if pid.isdigit() and _pid_alive(int(pid)):
                    continue
                shutil.rmtree(tmp, ignore_errors=True)
                removed += 1
        return removed


def _well_formed(manifest: Any) -> bool:
    """Whether ``manifest`` has the shape open_stage writes."""
    if not isinstance(manifest, dict) or not all(isinstance(manifest.get(name), str) for name in ("kind", "key")):
        return False
    if not all(isinstance(manifest.get(name, {}), dict) for name in ("config", "metrics", "row")) or "config" not in manifest:
        return False
    files = manifest.get("files")
    return isinstance(files, dict) and all(
        isinstance(meta, dict) and type(meta.get("size")) is int and isinstance(meta.get("sha256"), str)
        and not Path(name).is_absolute() and ".." not in Path(name).parts  # a file of this stage's folder
        for name, meta in files.items()
    )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
