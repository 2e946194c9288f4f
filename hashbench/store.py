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

from .errors import StoreError

MANIFEST = "manifest.json"


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


def _explain_os_error(exc: OSError, path: Path) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(f"the disk holding {path} is full; free space and run again (finished stages are kept)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"cannot write to {path} (permission denied); choose another `results` directory")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return StoreError(f"cannot write to {path}: part of that path is a file, not a folder; choose another `results` directory")
    return StoreError(f"cannot write to {path}: {exc}")


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

    def write_json(self, name: str, obj: Any) -> None:
        (self.dir / name).write_text(json.dumps(obj, indent=2, default=str))


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

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
            raise _explain_os_error(exc, self.root) from None

    # ------------------------------------------------------------------ reading
    def manifest(self, kind: str, key: str) -> dict[str, Any] | None:
        path = self.stage_dir(kind, key) / MANIFEST
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {"corrupt": True}

    def verify(self, kind: str, key: str) -> str | None:
        """None when the stage is complete and every file matches its checksum, else what is wrong."""
        manifest = self.manifest(kind, key)
        if manifest is None:
            return "not computed"
        if manifest.get("corrupt"):
            return "its manifest is unreadable"
        folder = self.stage_dir(kind, key)
        for name, meta in manifest.get("files", {}).items():
            path = folder / name
            if not path.is_file():
                return f"file {name} is missing"
            if path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
                return f"file {name} does not match its checksum (corrupt or truncated)"
        return None

    def is_done(self, kind: str, key: str) -> bool:
        manifest = self.manifest(kind, key)  # read once: `plan` calls this for every stage
        return manifest is not None and not manifest.get("corrupt")

    def load(self, kind: str, key: str, name: str) -> Any:
        path = self.stage_dir(kind, key) / name
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise StoreError(f"stage {kind}/{key} has no file {name}; run the benchmark again to recompute it") from None
        except Exception as exc:
            raise StoreError(f"{path} is corrupt ({exc.__class__.__name__}); delete the folder or run with --force") from None

    def load_json(self, kind: str, key: str, name: str) -> Any:
        return json.loads((self.stage_dir(kind, key) / name).read_text())

    def discard(self, kind: str, key: str) -> None:
        """Move a broken stage aside (kept for inspection) so it is recomputed."""
        folder = self.stage_dir(kind, key)
        if folder.exists():
            folder.rename(folder.with_name(f".broken-{key}-{int(time.time())}-{uuid.uuid4().hex[:6]}"))

    def finished_stages(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        folder = self.root / "stages" / kind
        if not folder.is_dir():
            return
        for child in sorted(folder.iterdir()):
            if child.name.startswith("."):
                continue
            manifest = self.manifest(kind, child.name)
            if manifest is not None and not manifest.get("corrupt"):
                yield child.name, manifest

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """An exclusive lock per stage (released by the OS when its holder dies)."""
        lock_dir = self.root / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{kind}-{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def open_stage(self, kind: str, key: str, config: dict[str, Any]) -> Iterator[StageWriter]:
        """Write a stage atomically: files go to a temporary folder that is renamed into place on success
        and removed on any failure (including KeyboardInterrupt)."""
        final = self.stage_dir(kind, key)
        tmp = final.with_name(f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            tmp.mkdir(parents=True)
        except OSError as exc:
            raise _explain_os_error(exc, tmp.parent) from None
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
            raise _explain_os_error(exc, final) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

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
