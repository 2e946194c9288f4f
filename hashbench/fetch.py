"""``hashbench fetch``: download a public dataset or weight file, check it, and lay it out as hashbench reads it.

This is the only place hashbench downloads anything, and only when a user asks for it; ``hashbench run``
never does. Every file is checked against its published checksum (the MD5 the dataset's authors publish,
or the SHA-256 prefix torchvision writes into a weight file's name) before it is put in place:

- a download goes to a hidden ``.part`` file beside its destination and is renamed over it only once
  the checksum matches, so an interrupted or corrupt download never leaves a half-written file;
- a file already present with the right checksum is not downloaded again;
- an archive (CIFAR-10) is unpacked member by member after checking that every member is a plain file
  or folder inside the folder the plugin reads (no absolute paths, no ``..``, no links or devices).

``HASHBENCH_FETCH_MIRROR=URL`` replaces every download's base URL by ``URL`` (the file name is appended),
for a local mirror or a test server; the checksums stay the published ones.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Literal

from .errors import HashbenchError

MIRROR_ENV = "HASHBENCH_FETCH_MIRROR"
TIMEOUT_S = 30
CHUNK = 1 << 20
# torch.hub's convention: the hex run between the last '-' and the '.' of a weight file's name is the
# start of the file's SHA-256 (alexnet-owt-7be5be79.pth -> 7be5be79).
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


class FetchError(HashbenchError):
    """A download failed, or what it brought does not match the published checksum."""


@dataclass(frozen=True)
class Download:
    """One file at a public URL, with what it is checked against."""

    filename: str
    url: str
    size: int  # bytes, for the listing and the progress bar when the server sends no length
    md5: str = ""  # the published MD5; "" for torchvision weights, whose name carries a SHA-256 prefix

    def __post_init__(self) -> None:
        if not self.md5 and not self.sha256_prefix:
            raise ValueError(f"{self.filename}: a download needs a published MD5 or a SHA-256 prefix in its name")

    @property
    def sha256_prefix(self) -> str:
        found = _HASH_IN_NAME.search(self.filename)
        return found.group(1) if found else ""

    def hasher(self):
        return hashlib.md5() if self.md5 else hashlib.sha256()

    def mismatch(self, hexdigest: str) -> str | None:
        """Why a file with this digest (of ``hasher()``) is not the published one, or None when it is."""
        if self.md5:
            return None if hexdigest == self.md5 else f"its MD5 is {hexdigest}, the published one is {self.md5}"
        if hexdigest.startswith(self.sha256_prefix):
            return None
        return f"its SHA-256 starts with {hexdigest[:8]}, the file name says {self.sha256_prefix}"

    def source_url(self) -> str:
        mirror = os.environ.get(MIRROR_ENV, "").strip()
        return f"{mirror.rstrip('/')}/{self.filename}" if mirror else self.url


@dataclass(frozen=True)
class Source:
    """Something ``hashbench fetch NAME`` can bring, and the layout it leaves for its reader.

    kind ``files``: the downloads are the files the reader opens, in ``root``.
    kind ``archive``: one tar.gz unpacked into ``root``; it must create ``folder`` holding ``members``
    (name, published MD5); the archive is removed once unpacked.
    kind ``weights``: a torchvision weight file, put in ``root/hub/checkpoints`` (so ``TORCH_HOME=root``
    finds it); without ``--root``, torch's own cache folder (``$TORCH_HOME/hub/checkpoints``).
    """

    name: str
    summary: str
    kind: Literal["files", "archive", "weights"]
    downloads: tuple[Download, ...]
    root: str  # the reader's default root; "" for weights (torch's cache)
    reader: str  # who reads the result, for the closing message
    folder: str = ""
    members: tuple[tuple[str, str], ...] = ()
    offline_hint: str = ""

    @property
    def size(self) -> int:
        return sum(d.size for d in self.downloads)

    def destination(self, root: str | None = None) -> Path:
        """The folder the downloads go to."""
        if self.kind != "weights":
            return Path(root or self.root).expanduser()
        if root:
            return Path(root).expanduser() / "hub" / "checkpoints"
        return torch_hub_dir() / "checkpoints"


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch (seconds, which `fetch --list` does not need):
    ``$TORCH_HOME/hub``, ``$TORCH_HOME`` defaulting to ``$XDG_CACHE_HOME/torch`` and that to
    ``~/.cache/torch``, as torch computes it when nothing called ``torch.hub.set_dir`` (hashbench never
    does). tests/test_fetch.py checks that the two agree."""
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.getenv("TORCH_HOME", os.path.join(cache, "torch"))).expanduser() / "hub"


def _idx_downloads(base: str, sizes_md5s: tuple[tuple[int, str], ...]) -> tuple[Download, ...]:
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return tuple(Download(name, base + name, size, md5) for name, (size, md5) in zip(names, sizes_md5s))


def _weights(name: str, filename: str, mib: float, used_by: str) -> Source:
    # Sizes are torchvision's record of each file (WeightsEnum meta "_file_size", in MiB).
    return Source(name, f"torchvision's ImageNet {name} weights ({used_by})", "weights",
                  (Download(filename, f"https://download.pytorch.org/models/{filename}", round(mib * 2**20)),),
                  "", used_by)


_DEBIAN_FASHION = ("or, on Debian/Ubuntu, `apt-get install dataset-fashion-mnist` puts the files in "
                   "/usr/share/datasets/fashion-mnist, which the fashion_mnist dataset reads directly")

CATALOGUE: dict[str, Source] = {s.name: s for s in (
    Source(
        "cifar10", "CIFAR-10, python batches (60,000 32x32 colour images)", "archive",
        (Download("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                  170498071, "c58f30108f718f92721af3b95e74349a"),),
        "data/cifar10", "the cifar10 dataset", folder="cifar-10-batches-py",
        # MD5s of the unpacked batches, as torchvision's CIFAR10 checks them.
        members=(("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                 ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                 ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                 ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                 ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
                 ("test_batch", "40351d587109b95175f43aff81a1287e")),
    ),
    Source(
        "fashion_mnist", "Fashion-MNIST, gzipped IDX files (70,000 28x28 grey images)", "files",
        # MD5s as published in github.com/zalandoresearch/fashion-mnist's README.
        _idx_downloads("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", (
            (26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"), (29515, "25c81989df183df01b3e8a0aad5dffbe"),
            (4422102, "bef4ecab320f06d8554ea6380940ec79"), (5148, "bb300cfdad3c16e7a12a480ee83cd310"))),
        "data/fashion-mnist", "the fashion_mnist dataset", offline_hint=_DEBIAN_FASHION,
    ),
    Source(
        "mnist", "MNIST, gzipped IDX files (70,000 28x28 grey digits)", "files",
        # The MD5s of LeCun's files; the mirror is the one torchvision downloads from.
        _idx_downloads("https://ossci-datasets.s3.amazonaws.com/mnist/", (
            (9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"), (28881, "d53e105ee54ea40749a09fcbcd1e9432"),
            (1648877, "9fb629c4189551a2d022fa330f9573f3"), (4542, "ec29112dd5afa0611ce80d1b7f02629c"))),
        "data/mnist", "the mnist dataset",
    ),
    _weights("alexnet", "alexnet-owt-7be5be79.pth", 233.087, "LPIPS and the alexnet backbone"),
    _weights("resnet18", "resnet18-f37072fd.pth", 44.661, "the resnet18 backbone"),
    _weights("resnet50", "resnet50-0676ba61.pth", 97.781, "the resnet50 backbone"),
    _weights("vgg11", "vgg11-8a719046.pth", 506.84, "the vgg11 backbone"),
)}


def catalogue_rows(root: str | None = None) -> list[list[str]]:
    """[name, size, destination, what] per source, for ``hashbench fetch --list``."""
    return [[s.name, f"{s.size / 2**20:.1f} MiB", str(s.destination(root) / s.folder), s.summary]
            for s in CATALOGUE.values()]


def fetch(source: Source, root: str | None = None, *, progress: bool = True,
          say: Callable[[str], None] = print) -> Path:
    """Bring ``source`` into ``source.destination(root)`` (see the module docstring); returns that folder."""
    folder = source.destination(root)
    rerun = f"hashbench fetch {source.name}" + (f" --root {root}" if root else "")
    if source.kind == "archive" and _members_valid(source, folder):
        say(f"{source.name}: {folder / source.folder} is already present and matches the published checksums")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for download in source.downloads:
        path = folder / download.filename
        if path.is_file():
            why = download.mismatch(_hash_file(path, download.hasher()))
            if why is None:
                say(f"{source.name}: {path} is already present and matches the published checksum")
                continue
            say(f"{source.name}: {path} is not the published file ({why}); downloading it again")
        _download(download, path, source, rerun, progress)
        say(f"{source.name}: downloaded {path} (checksum matches)")
    if source.kind == "archive":
        archive = folder / source.downloads[0].filename
        _unpack(archive, folder, source, rerun)
        archive.unlink()
        say(f"{source.name}: unpacked into {folder / source.folder}")
    if source.kind == "weights":
        say(f"{source.name} is ready in {folder}, for {source.reader}"
            + (f"; set TORCH_HOME={root} so that hashbench looks there" if root else ""))
    else:
        say(f"{source.name} is ready in {folder}, for {source.reader} with root = \"{folder}\"")
    return folder


def _hash_file(path: Path, h) -> str:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _members_valid(source: Source, folder: Path) -> bool:
    base = folder / source.folder
    return all((base / name).is_file() and _hash_file(base / name, hashlib.md5()) == md5 for name, md5 in source.members)


def _download(download: Download, path: Path, source: Source, rerun: str, progress: bool) -> None:
    """Stream ``download`` to a temporary file beside ``path``; rename it to ``path`` once its checksum matches."""
    from tqdm import tqdm

    url = download.source_url()
    if len(source.downloads) == 1:
        what = f"Download it on a machine with network access and put it at {path}"
    else:
        names = ", ".join(d.filename for d in source.downloads)
        what = f"Download {names} from {url.rsplit('/', 1)[0]}/ on a machine with network access into {path.parent}"
    by_hand = (f"{what}, then run `{rerun}` again to check {'it' if len(source.downloads) == 1 else 'them'}"
               + (" and unpack it" if source.kind == "archive" else "")
               + (f"; {source.offline_hint}" if source.offline_hint else "")
               + f" (or set {MIRROR_ENV} to a server that has the same files)")
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".part", delete=False)
    try:
        h = download.hasher()
        with tmp:
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                    total = int(response.headers.get("Content-Length") or download.size) or None
                    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=download.filename,
                              disable=not progress, leave=False) as bar:
                        while chunk := response.read(CHUNK):
                            tmp.write(chunk)
                            h.update(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                raise FetchError(f"cannot download {url}: {_why(exc)}. {by_hand}") from None
        why = download.mismatch(h.hexdigest())
        if why is not None:
            raise FetchError(f"{url} did not give the published file ({why}); nothing was kept. Run `{rerun}` "
                             f"again; if it happens again the server has another file. {by_hand}")
        os.replace(tmp.name, path)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise


def _why(exc: BaseException) -> str:
    """What went wrong with a connection, in words."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return "the host name cannot be resolved (no network or no DNS)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (offline, or a proxy or firewall in the way)"
    if isinstance(reason, TimeoutError):
        return f"no answer within {TIMEOUT_S} s (offline or the server is down)"
    return str(reason) or type(reason).__name__


def _unpack(archive: Path, folder: Path, source: Source, rerun: str) -> None:
    """Unpack ``archive`` into ``folder`` after checking every member; nothing is written unless all are safe."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, source.folder, archive)
            scratch = Path(tempfile.mkdtemp(dir=folder, prefix=f".{source.name}-unpack-"))
            try:
                # filter="data" (Python >= 3.11.4, 3.10.12) refuses the same things again, as a second line.
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(scratch, members=members, **extra)
                _check_members(source, scratch, archive)
                for member in members:
                    if member.isfile():
                        target = folder / member.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(scratch / member.name, target)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as exc:
        archive.unlink(missing_ok=True)
        raise FetchError(f"{archive} cannot be unpacked ({exc}); it was removed: run `{rerun}` again") from None
    except FetchError:
        archive.unlink(missing_ok=True)
        raise


def _check_member(member: tarfile.TarInfo, folder: str, archive: Path) -> None:
    path = PurePosixPath(member.name)
    if not (member.isfile() or member.isdir()):
        why = "it is a link or a special file"
    elif path.is_absolute() or ".." in path.parts:
        why = "its path leaves the destination folder"
    elif path.parts[:1] != (folder,):
        why = f"it is not inside {folder}/"
    else:
        return
    raise FetchError(f"{archive}: refusing to unpack {member.name!r}: {why}. This is not the published archive; "
                     f"it was removed and nothing was unpacked")


def _check_members(source: Source, scratch: Path, archive: Path) -> None:
    for name, md5 in source.members:
        path = scratch / source.folder / name
        if not path.is_file() or _hash_file(path, hashlib.md5()) != md5:
            raise FetchError(f"{archive} does not hold {source.folder}/{name} with its published MD5 {md5}; "
                             f"it was removed and nothing was unpacked")
