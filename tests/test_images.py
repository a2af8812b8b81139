"""ImageStore: confinement to the root, checks, hashing and request-time encoding."""
from __future__ import annotations

import base64
import builtins
import hashlib
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from evol.images import ImageError, ImageStore


def save(path: Path, size=(64, 48), mode="RGB", fmt="JPEG", color=(200, 30, 30, 255)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = color if mode == "RGBA" else color[:3]
    Image.new(mode, size, fill).save(path, fmt)
    return path


def decode(url: str) -> tuple[str, Image.Image, bytes]:
    head, _, payload = url.partition(",")
    assert head.startswith("data:image/") and head.endswith(";base64")
    raw = base64.b64decode(payload)
    return head[5:-7], Image.open(io.BytesIO(raw)), raw


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    save(r / "a.jpg")
    save(r / "sub" / "wide.jpg", size=(2000, 1000))
    save(r / "alpha.png", size=(600, 300), mode="RGBA", fmt="PNG", color=(0, 0, 255, 100))
    (r / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg at all")
    (r / "notes.txt").write_text("hello")
    save(tmp_path / "outside.jpg")
    return r


@pytest.fixture()
def no_reading(monkeypatch):
    """Fail the test if anything tries to open or read a file."""
    def boom(*args, **kwargs):
        raise AssertionError(f"file was opened: {args[:1]}")
    monkeypatch.setattr(builtins, "open", boom)
    monkeypatch.setattr(io, "open", boom)
    monkeypatch.setattr(os, "open", boom)
    monkeypatch.setattr(Path, "read_bytes", boom)
    monkeypatch.setattr(Path, "open", boom)
    monkeypatch.setattr(Image, "open", boom)


def test_resolve_inside_root(root: Path):
    store = ImageStore(root)
    real = Path(os.path.realpath(root))
    assert store.resolve("a.jpg") == real / "a.jpg"
    assert store.resolve("sub/../a.jpg") == real / "a.jpg"
    assert store.resolve(str(root / "sub" / "wide.jpg")) == real / "sub" / "wide.jpg"


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "symlinked_dir"])
def test_escapes_are_refused_without_reading(root: Path, kind: str, no_reading):
    outside = root.parent / "outside.jpg"
    if kind == "absolute":
        ref = str(outside)
    elif kind == "dotdot":
        ref = "sub/../../outside.jpg"
    elif kind == "symlink":
        os.symlink(outside, root / "link.jpg")
        ref = "link.jpg"
    else:
        os.symlink(root.parent, root / "up")
        ref = "up/outside.jpg"
    store = ImageStore(root)
    for call in (store.resolve, store.check, store.content_hash, store.data_url):
        with pytest.raises(ImageError, match="outside the image root") as info:
            call(ref)
        assert ref in str(info.value)


def test_no_root_refuses_local_paths_but_passes_urls(tmp_path: Path):
    store = ImageStore(None)
    with pytest.raises(ImageError, match="no --image-root given"):
        store.resolve("a.jpg")
    with pytest.raises(ImageError, match="no --image-root given"):
        store.check("a.jpg")
    url = "https://example.org/cat.jpg"
    store.check(url)  # not fetched
    assert store.data_url(url) == url
    assert store.content_hash(url) == hashlib.sha256(url.encode()).hexdigest()


def test_check_reasons(root: Path):
    store = ImageStore(root)
    store.check("a.jpg")
    with pytest.raises(ImageError, match="image not found: missing.jpg"):
        store.check("missing.jpg")
    with pytest.raises(ImageError, match="image not found"):
        store.check("sub")  # a folder
    with pytest.raises(ImageError, match="image is corrupt or not an image: bad.jpg"):
        store.check("bad.jpg")
    with pytest.raises(ImageError, match="image is corrupt or not an image: notes.txt"):
        store.check("notes.txt")
    with pytest.raises(ImageError, match="empty image reference"):
        store.check("")


def test_check_data_urls(root: Path):
    store = ImageStore(root)
    good = ImageStore(root, max_side=0).data_url("a.jpg")
    store.check(good)
    with pytest.raises(ImageError, match="corrupt or not an image"):
        store.check("data:image/png;base64," + base64.b64encode(b"nope").decode())
    with pytest.raises(ImageError, match="not an image"):
        store.check("data:text/plain;base64,aGk=")


def test_content_hash_is_of_bytes_and_memoised(root: Path, monkeypatch):
    store = ImageStore(root)
    raw = (root / "a.jpg").read_bytes()
    assert store.content_hash("a.jpg") == hashlib.sha256(raw).hexdigest()
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real(self))
    store.content_hash("a.jpg")
    assert reads == []  # memoised
    save(root / "a.jpg", size=(65, 48), color=(0, 255, 0, 255))  # new content, new size
    new = store.content_hash("a.jpg")
    assert new == hashlib.sha256((root / "a.jpg").read_bytes()).hexdigest() != hashlib.sha256(raw).hexdigest()
    with pytest.raises(ImageError, match="image not found"):
        store.content_hash("missing.jpg")


def test_downscale_honours_max_side_and_keeps_aspect(root: Path):
    store = ImageStore(root, max_side=256)
    mime, img, _ = decode(store.data_url("sub/wide.jpg"))
    assert mime == "image/jpeg"
    assert img.size == (256, 128)
    # never upscaled
    mime, img, _ = decode(store.data_url("a.jpg"))
    assert img.size == (64, 48)


def test_alpha_stays_png_and_others_become_jpeg(root: Path):
    store = ImageStore(root, max_side=200)
    mime, img, _ = decode(store.data_url("alpha.png"))
    assert mime == "image/png" and img.mode in ("RGBA", "LA") and img.size == (200, 100)
    save(root / "big.png", size=(400, 100), fmt="PNG")  # no alpha
    mime, img, _ = decode(store.data_url("big.png"))
    assert mime == "image/jpeg" and img.size == (200, 50)


def test_max_side_zero_sends_original_bytes(root: Path):
    store = ImageStore(root, max_side=0)
    mime, img, raw = decode(store.data_url("sub/wide.jpg"))
    assert mime == "image/jpeg" and raw == (root / "sub" / "wide.jpg").read_bytes()
    assert img.size == (2000, 1000)


def test_encodings_are_cached_until_the_file_changes(root: Path, monkeypatch):
    store = ImageStore(root, max_side=256)
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real(self))
    first = store.data_url("sub/wide.jpg")
    assert store.data_url("sub/wide.jpg") == first
    assert reads == ["wide.jpg"]
    save(root / "sub" / "wide.jpg", size=(1000, 1000))
    _, img, _ = decode(store.data_url("sub/wide.jpg"))
    assert img.size == (256, 256) and reads == ["wide.jpg", "wide.jpg"]


def test_corrupt_and_missing_when_encoding(root: Path):
    store = ImageStore(root)
    with pytest.raises(ImageError, match="corrupt or not an image: bad.jpg"):
        store.data_url("bad.jpg")
    with pytest.raises(ImageError, match="image not found: nope.png"):
        store.data_url("nope.png")


async def test_async_encoding_matches(root: Path):
    store = ImageStore(root, max_side=128)
    assert await store.adata_url("sub/wide.jpg") == store.data_url("sub/wide.jpg")
    assert await store.adata_url("http://x/y.png") == "http://x/y.png"
