"""``hashbench fetch`` against a local HTTP server on 127.0.0.1 that serves small files in the real formats.

The catalogue is the real one with each checksum replaced by that of the test's own file, and
HASHBENCH_FETCH_MIRROR points every download at the local server: nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import socket
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from hashbench import DatasetContext, cli, fetch
from hashbench.loading import instantiate

from test_datasets import write_cifar
from test_idx import idx_bytes

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class Server:
    """A folder served over HTTP on an ephemeral port; ``requests`` lists the paths asked for."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                server.requests.append(self.path)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def publish(self, name: str, data: bytes) -> str:
        """Serve ``data`` as ``name``; returns its MD5."""
        (self.folder / name).write_bytes(data)
        return hashlib.md5(data).hexdigest()


@pytest.fixture
def server(tmp_path, monkeypatch):
    folder = tmp_path / "served"
    folder.mkdir()
    srv = Server(folder)
    monkeypatch.setenv(fetch.MIRROR_ENV, srv.url + "/")
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def use_checksums(monkeypatch, name: str, md5s: dict[str, str], members: tuple = ()) -> fetch.Source:
    """The catalogue's ``name`` with the test files' MD5s (and archive members), installed for the CLI."""
    real = fetch.CATALOGUE[name]
    downloads = tuple(dataclasses.replace(d, md5=md5s[d.filename]) for d in real.downloads)
    source = dataclasses.replace(real, downloads=downloads, members=members or real.members)
    monkeypatch.setitem(fetch.CATALOGUE, name, source)
    return source


def publish_idx(server: Server) -> dict[str, str]:
    """Tiny gzipped IDX files: 20 training and 10 test 28x28 images, classes 0..9 in turn; their MD5s."""
    rng = np.random.default_rng(0)
    md5s = {}
    for split, count in (("train", 20), ("t10k", 10)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{split}-{kind}-ubyte.gz"
            md5s[name] = server.publish(name, gzip.compress(idx_bytes(array), mtime=0))
    return md5s


def tar_gz(entries: list[tarfile.TarInfo], folder: Path | None = None) -> bytes:
    """A tar.gz of ``folder``'s tree (as it is on disk, names relative to its parent) plus ``entries``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if folder is not None:
            tar.add(folder, arcname=folder.name)
        for info in entries:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


def publish_cifar(server: Server, tmp_path: Path, extra: list[tarfile.TarInfo] = ()) -> tuple[str, tuple]:
    """A cifar-10-python.tar.gz of tiny batches in the real pickle layout; (its MD5, (batch, MD5) pairs)."""
    batches = tmp_path / "made" / "cifar-10-batches-py"
    write_cifar(batches, per_batch=10)
    members = tuple((p.name, hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(batches.iterdir()))
    return server.publish("cifar-10-python.tar.gz", tar_gz(list(extra), batches)), members


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["fetch", *args, "-q"])
    out, err = capsys.readouterr()
    return code, out, err


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_fashion_mnist_lands_where_the_dataset_reads_it(server, tmp_path, monkeypatch, capsys):
    use_checksums(monkeypatch, "fashion_mnist", publish_idx(server))
    root = tmp_path / "fm"
    code, out, err = run_cli(capsys, "fashion_mnist", "--root", str(root))
    assert code == 0, err
    assert files_under(root) == sorted(f"{name}.gz" for name in IDX_FILES)  # and no .part left behind
    for name in IDX_FILES:
        assert (root / f"{name}.gz").read_bytes() == (server.folder / f"{name}.gz").read_bytes()
    assert sorted(server.requests) == sorted(f"/{name}.gz" for name in IDX_FILES)
    assert f'root = "{root}"' in out
    try:
        dataset = instantiate("dataset", {"name": "fashion_mnist", "params": {
            "root": str(root), "query_per_class": 1, "train_per_class": 1}})
    except Exception as exc:  # noqa: BLE001 - the reader is another module's; its absence is not this test's
        pytest.skip(f"the fashion_mnist dataset is not available to read the fetched files: {exc}")
    splits = dataset.load(DatasetContext(tmp_path / "cache", 0))
    assert len(splits.query) == 10 and len(splits.query) + len(splits.database) == 30


def test_present_valid_files_are_not_downloaded_again(server, tmp_path, monkeypatch, capsys):
    use_checksums(monkeypatch, "mnist", publish_idx(server))
    root = tmp_path / "mnist"
    assert run_cli(capsys, "mnist", "--root", str(root))[0] == 0
    server.requests.clear()
    code, out, _ = run_cli(capsys, "mnist", "--root", str(root))
    assert code == 0 and server.requests == [] and out.count("already present") == 4
    # A damaged copy is replaced, and only that file is downloaded.
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    code, out, _ = run_cli(capsys, "mnist", "--root", str(root))
    assert code == 0 and server.requests == ["/t10k-labels-idx1-ubyte.gz"] and "downloading it again" in out
    assert (root / "t10k-labels-idx1-ubyte.gz").read_bytes() == (server.folder / "t10k-labels-idx1-ubyte.gz").read_bytes()


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path, monkeypatch, capsys):
    md5s = publish_idx(server)
    md5s["t10k-images-idx3-ubyte.gz"] = "0" * 32  # the server's file is not the "published" one
    use_checksums(monkeypatch, "fashion_mnist", md5s)
    root = tmp_path / "fm"
    code, _, err = run_cli(capsys, "fashion_mnist", "--root", str(root))
    assert code == 2 and err.startswith("hashbench: error: ") and err.count("\n") == 1
    assert "t10k-images-idx3-ubyte.gz" in err and "0" * 32 in err and "nothing was kept" in err
    # The two files before it were good and stay; the bad one and its temporary file are gone.
    assert files_under(root) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_offline_gives_one_clear_error(tmp_path, monkeypatch, capsys):
    with socket.socket() as probe:  # a port nothing listens on: connecting to it is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(fetch.MIRROR_ENV, f"http://127.0.0.1:{port}")
    root = tmp_path / "fm"
    code, out, err = run_cli(capsys, "fashion_mnist", "--root", str(root))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"hashbench: error: cannot download http://127.0.0.1:{port}/train-images-idx3-ubyte.gz: "
                          "connection refused")
    assert f"into {root}" in err and "apt-get install dataset-fashion-mnist" in err and fetch.MIRROR_ENV in err
    assert files_under(root) == []


def test_cifar10_unpacks_into_the_batches_folder(server, tmp_path, monkeypatch, capsys):
    archive_md5, members = publish_cifar(server, tmp_path)
    use_checksums(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive_md5}, members)
    root = tmp_path / "cifar"
    code, out, err = run_cli(capsys, "cifar10", "--root", str(root))
    assert code == 0, err
    # The archive is gone once unpacked; the batches are where the cifar10 dataset reads them.
    assert files_under(root) == sorted(f"cifar-10-batches-py/{name}" for name, _ in members)
    splits = instantiate("dataset", {"name": "cifar10", "params": {"root": str(root), "protocol": "cifar10-2"}}).load(
        DatasetContext(tmp_path / "cache", 0))
    assert (len(splits.train), len(splits.query)) == (50, 10)
    server.requests.clear()
    assert run_cli(capsys, "cifar10", "--root", str(root))[0] == 0 and server.requests == []


def test_cifar10_archive_with_other_batches_is_refused(server, tmp_path, monkeypatch, capsys):
    archive_md5, members = publish_cifar(server, tmp_path)
    wrong = tuple((name, "f" * 32 if name == "test_batch" else md5) for name, md5 in members)
    use_checksums(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive_md5}, wrong)
    root = tmp_path / "cifar"
    code, _, err = run_cli(capsys, "cifar10", "--root", str(root))
    assert code == 2 and "cifar-10-batches-py/test_batch" in err and files_under(root) == []


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 4 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("member", [
    _member("/tmp/hashbench-fetch-test-absolute"),
    _member("cifar-10-batches-py/../../escaped"),
    _member("cifar-10-batches-py/passwd", tarfile.SYMTYPE, "/etc/passwd"),
    _member("cifar-10-batches-py/hard", tarfile.LNKTYPE, "../outside"),
    _member("elsewhere.txt"),
], ids=["absolute", "dotdot", "symlink", "hardlink", "outside-folder"])
def test_unsafe_tar_members_are_refused(server, tmp_path, monkeypatch, capsys, member):
    archive_md5, members = publish_cifar(server, tmp_path, [member])
    use_checksums(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive_md5}, members)
    root = tmp_path / "cifar"
    code, _, err = run_cli(capsys, "cifar10", "--root", str(root))
    assert code == 2 and "refusing to unpack" in err and repr(member.name) in err
    assert files_under(root) == [] and not Path("/tmp/hashbench-fetch-test-absolute").exists()
    assert not (tmp_path / "escaped").exists()


def test_weights_are_checked_by_the_hash_in_their_name(server, tmp_path, monkeypatch, capsys):
    buffer = io.BytesIO()
    torch.save({"weight": torch.arange(6.0).reshape(2, 3)}, buffer)
    data = buffer.getvalue()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    good, bad = f"tiny-{prefix}.pth", f"tiny-{'0' * 8 if prefix != '0' * 8 else '1' * 8}.pth"
    for name in (good, bad):
        server.publish(name, data)
    real = fetch.CATALOGUE["alexnet"]
    for name, ok in ((good, True), (bad, False)):
        download = dataclasses.replace(real.downloads[0], filename=name, url="http://127.0.0.1:1/unused/" + name)
        monkeypatch.setitem(fetch.CATALOGUE, "alexnet", dataclasses.replace(real, downloads=(download,)))
        code, out, err = run_cli(capsys, "alexnet", "--root", str(tmp_path / "torch"))
        checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
        if ok:
            assert code == 0 and f"TORCH_HOME={tmp_path / 'torch'}" in out
            state = torch.load(checkpoints / name, weights_only=True)
            assert torch.equal(state["weight"], torch.arange(6.0).reshape(2, 3))
        else:
            assert code == 2 and f"starts with {prefix}" in err and not (checkpoints / name).exists()
    assert files_under(tmp_path / "torch") == [f"hub/checkpoints/{good}"]


def test_weight_names_are_the_ones_hashbench_reads():
    import torchvision

    from hashbench.stealth import ALEXNET_FILE

    assert fetch.CATALOGUE["alexnet"].downloads[0].filename == ALEXNET_FILE
    for name, weights in (("alexnet", torchvision.models.AlexNet_Weights.IMAGENET1K_V1),
                          ("resnet18", torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
                          ("resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
                          ("vgg11", torchvision.models.VGG11_Weights.IMAGENET1K_V1)):
        assert fetch.CATALOGUE[name].downloads[0].url == weights.url
    assert fetch.CATALOGUE["alexnet"].downloads[0].sha256_prefix == "7be5be79"
    with pytest.raises(ValueError, match="published MD5 or a SHA-256 prefix"):
        fetch.Download("data.bin", "http://example.invalid/data.bin", 1)


@pytest.mark.parametrize("env", [{}, {"TORCH_HOME": "~/th"}, {"XDG_CACHE_HOME": "/xdg"},
                                 {"TORCH_HOME": "/th", "XDG_CACHE_HOME": "/xdg"}], ids=["none", "home", "xdg", "both"])
def test_the_weights_folder_is_torch_hubs_without_importing_torch(env, monkeypatch):
    for variable in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    assert fetch.torch_hub_dir() == Path(torch.hub.get_dir())


def test_list_names_size_and_destination(tmp_path, capsys):
    assert cli.main(["fetch", "--list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in fetch.CATALOGUE:
        assert name in out
    assert str(tmp_path / "cifar-10-batches-py") in out and str(tmp_path / "hub" / "checkpoints") in out
    assert cli.main(["fetch"]) == 0 and "fashion_mnist" in capsys.readouterr().out


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="needs Debian's copy of Fashion-MNIST in "
                    f"{DEBIAN_FASHION} (apt-get install dataset-fashion-mnist)")
def test_published_fashion_mnist_checksums_match_the_debian_copies():
    """The catalogue's MD5s and sizes, checked against real files without the network.

    Debian's files hold the published deflate streams under a shorter gzip header (no file name, its own
    time stamp). Putting back the original header (flag FNAME, the original time stamp, OS 3 = Unix, the
    file name) must give exactly the published file. The time stamps are 0x59a7e9de for the train files and
    0x59a7e9f3 for the t10k ones: the published label files' headers hold them, and a search over the
    stamps within 15 minutes of them found the same ones for the image files.
    """
    for download in fetch.CATALOGUE["fashion_mnist"].downloads:
        debian = (DEBIAN_FASHION / download.filename).read_bytes()
        assert debian[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no flags: the header is 10 bytes
        stem = download.filename.removesuffix(".gz")
        stamp = 0x59A7E9DE if stem.startswith("train") else 0x59A7E9F3
        original = b"\x1f\x8b\x08\x08" + stamp.to_bytes(4, "little") + b"\x00\x03" + stem.encode() + b"\x00" + debian[10:]
        assert len(original) == download.size
        assert hashlib.md5(original).hexdigest() == download.md5
