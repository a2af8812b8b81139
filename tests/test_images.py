"""ImageStore: confinement to the root, checks, hashing and request-time encoding."""
from __future__ import annotations

import base64
import builtins
import hashlib
import io
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile, JpegImagePlugin

import evol.images as images_mod
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
    store = ImageStore(None, allow_urls=True)
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


def test_load_gives_the_pixels_data_url_sends(root: Path):
    """Local backends take pixels (`load`): the same downscale and rotation as `data_url`."""
    store = ImageStore(root, max_side=256)
    img = store.load("sub/wide.jpg")
    assert img.mode == "RGB" and img.size == (256, 128) == decode(store.data_url("sub/wide.jpg"))[1].size
    assert store.load("a.jpg").size == (64, 48)  # never upscaled
    assert store.load("alpha.png").mode == "RGB"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated a quarter turn
    Image.new("RGB", (400, 100), (1, 2, 3)).save(root / "turned.jpg", exif=exif)
    assert store.load("turned.jpg").size == (64, 256) == decode(store.data_url("turned.jpg"))[1].size
    assert store.load(store.data_url("sub/wide.jpg")).size == (256, 128)
    with pytest.raises(ImageError, match="corrupt or not an image: bad.jpg"):
        store.load("bad.jpg")
    with pytest.raises(ImageError, match="image not found: nope.png"):
        store.load("nope.png")
    with pytest.raises(ImageError, match="not fetched by a local backend"):
        store.load("https://example.org/a.jpg")
    with pytest.raises(ImageError, match="image too large"):
        ImageStore(root, max_pixels=1000).load("a.jpg")


async def test_async_encoding_matches(root: Path):
    store = ImageStore(root, max_side=128)
    assert await store.adata_url("sub/wide.jpg") == store.data_url("sub/wide.jpg")
    assert await store.adata_url("http://x/y.png") == "http://x/y.png"


# -- limits: pixels, truncation, decode memory, URLs ----------------------------------------
def huge_png(path: Path, width: int, height: int) -> Path:
    """A real 1-bit grayscale PNG of any size, written row by row.

    Pillow would have to hold all width x height pixels (one byte each, even in mode "1")
    to save it: 400 MB for 20000 x 20000. Streamed through zlib it costs a row of memory
    and is ~50 KB on disk.
    """
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def noisy_jpeg(path: Path, size=(800, 600)) -> Path:
    """A JPEG with real entropy-coded data (a flat colour compresses to almost nothing)."""
    Image.effect_noise(size, 60).convert("RGB").save(path, "JPEG", quality=90)
    return path


@pytest.fixture()
def loads(monkeypatch) -> list[tuple[int, int]]:
    """Every full decode, by the size it decodes at."""
    seen: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load

    def counting(self):
        seen.append(self.size)
        return real(self)
    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    return seen


def test_huge_png_writer_makes_real_pngs(tmp_path: Path):
    with Image.open(huge_png(tmp_path / "small.png", 37, 5)) as img:
        img.load()
        assert img.size == (37, 5) and img.mode == "1"


def test_too_many_pixels_is_too_large_from_the_header(tmp_path: Path, loads):
    huge_png(tmp_path / "big.png", 20000, 20000)
    assert (tmp_path / "big.png").stat().st_size < 1_000_000
    store = ImageStore(tmp_path)
    want = "image too large: 20000 x 20000 (400,000,000 pixels; --max-pixels 100,000,000): big.png"
    for call in (store.check, store.data_url):
        with pytest.raises(ImageError) as info:
            call("big.png")
        assert str(info.value) == want
    assert loads == []  # refused from the header: nothing decoded


def test_max_pixels_boundary(tmp_path: Path):
    save(tmp_path / "p.png", size=(100, 50), fmt="PNG")
    ImageStore(tmp_path, max_pixels=5000).check("p.png")
    ImageStore(tmp_path, max_pixels=5000).data_url("p.png")
    with pytest.raises(ImageError, match=r"^image too large: 100 x 50 \(5,000 pixels; --max-pixels 4,999\): p.png$"):
        ImageStore(tmp_path, max_pixels=4999).check("p.png")
    with pytest.raises(ImageError, match="image too large"):
        ImageStore(tmp_path, max_pixels=4999, max_side=0).data_url("p.png")


def test_pillow_bomb_limit_never_decides(tmp_path: Path, monkeypatch):
    """Pillow's own MAX_IMAGE_PIXELS (warning above it, error above twice it) is ignored:
    --max-pixels alone decides. Lowered here so that a small image is 'a bomb' to Pillow."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    save(tmp_path / "p.png", size=(100, 50), fmt="PNG")  # 5,000 pixels > 2 x 1,000
    noisy_jpeg(tmp_path / "n.jpg", size=(120, 90))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        store = ImageStore(tmp_path, max_side=32)
        for ref in ("p.png", "n.jpg"):
            store.check(ref)
            _, img, _ = decode(store.data_url(ref))
            assert max(img.size) == 32
        with pytest.raises(ImageError, match="image too large: 100 x 50"):
            ImageStore(tmp_path, max_pixels=4000).check("p.png")
    assert Image.MAX_IMAGE_PIXELS == 1000  # not changed behind anyone's back


def test_raised_max_pixels_admits_images_above_pillows_limits(tmp_path: Path, monkeypatch):
    """400 megapixels is over Pillow's default error threshold (~179M); with --max-pixels
    raised, the header stage lets it through (the decode itself is stubbed out here)."""
    huge_png(tmp_path / "big.png", 20000, 20000)
    decoded = []
    monkeypatch.setattr(images_mod, "_full_decode", lambda img: decoded.append(img.size))
    ImageStore(tmp_path, max_pixels=400_000_000).check("big.png")
    assert decoded == [(20000, 20000)]


@pytest.mark.parametrize("max_side", [0, 64])
def test_truncated_jpeg_is_an_input_fault(tmp_path: Path, max_side: int, monkeypatch):
    raw = noisy_jpeg(tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) * 6 // 10])
    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, mode, size: drafts.append(size) or real_draft(self, mode, size))
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # someone else turned it on
    store = ImageStore(tmp_path, max_side=max_side)
    store.check("whole.jpg")
    with pytest.raises(ImageError, match=r"^image is truncated or corrupt: cut.jpg$"):
        store.check("cut.jpg")
    # draft (a reduced DCT scale) still reads the whole entropy-coded stream
    assert drafts == ([] if max_side == 0 else [(64, 64), (64, 64)])


def test_big_jpeg_is_decoded_at_a_reduced_scale(tmp_path: Path, loads):
    noisy_jpeg(tmp_path / "big.jpg", size=(2000, 1500))
    ImageStore(tmp_path, max_side=256).check("big.jpg")
    assert loads == [(500, 375)]  # 1/4 scale: still >= 256 on both sides
    _, img, _ = decode(ImageStore(tmp_path, max_side=256).data_url("big.jpg"))
    assert img.size == (256, 192) and loads[1] == (500, 375)
    loads.clear()
    ImageStore(tmp_path, max_side=0).check("big.jpg")  # originals are sent: full decode
    ImageStore(tmp_path, max_side=4000).check("big.jpg")
    assert loads == [(2000, 1500), (2000, 1500)]


def test_verdicts_are_cached_per_file_until_it_changes(root: Path, loads):
    store = ImageStore(root)
    store.check("a.jpg")
    store.check("a.jpg")
    store.check("sub/../a.jpg")  # same file by another name
    assert len(loads) == 1
    noisy_jpeg(root / "t.jpg")
    raw = (root / "t.jpg").read_bytes()
    (root / "t.jpg").write_bytes(raw[: len(raw) * 6 // 10])
    for ref in ("t.jpg", "t.jpg", "./t.jpg"):
        with pytest.raises(ImageError) as info:
            store.check(ref)
        assert str(info.value) == f"image is truncated or corrupt: {ref}"  # names the ref asked for
    assert len(loads) == 2
    (root / "t.jpg").write_bytes(raw)  # repaired: new size, new mtime
    store.check("t.jpg")
    assert len(loads) == 3
    for _ in range(2):  # permission and not-found answers are not remembered
        with pytest.raises(ImageError, match="image not found"):
            store.check("gone.jpg")
    save(root / "gone.jpg")
    store.check("gone.jpg")


@pytest.mark.parametrize("ref, scheme", [
    ("file:///etc/passwd", "file"),
    ("file:a.jpg", "file"),
    ("FILE:///etc/hosts", "file"),
    ("ftp://host/pic.jpg", "ftp"),
    ("gopher://host/1", "gopher"),
    ("s3://bucket/key.jpg", "s3"),
    ("x-y.z+w:thing", "x-y.z+w"),
])
def test_other_schemes_are_refused_by_name(root: Path, ref: str, scheme: str, no_reading):
    store = ImageStore(root, allow_urls=True)
    for call in (store.check, store.resolve, store.content_hash, store.data_url):
        with pytest.raises(ImageError) as info:
            call(ref)
        assert str(info.value) == f"image reference uses the {scheme}: scheme, which is not supported: {ref}"


def test_windows_drive_letter_is_a_path_not_a_scheme(root: Path):
    with pytest.raises(ImageError, match=r"^image not found: C:/pics/a.jpg$"):
        ImageStore(root).check("C:/pics/a.jpg")


def test_http_urls_need_allow_urls(root: Path, no_reading):
    for url in ("http://example.org/a.jpg", "HTTPS://example.org/a.jpg"):
        with pytest.raises(ImageError) as info:
            ImageStore(root).check(url)
        assert str(info.value) == (f"image URL not allowed: {url} "
                                   "(pass --allow-image-urls to let the model server fetch it)")
        allowed = ImageStore(root, allow_urls=True)
        allowed.check(url)  # not fetched
        assert allowed.data_url(url) == url  # passed through as before


@pytest.mark.parametrize("ref, shown", [
    ("http://user:s3cret@example.org/a.jpg", "http://***@example.org/a.jpg"),
    ("https://tok:s3cret@example.org:8443/a.jpg?x=1", "https://***@example.org:8443/a.jpg?x=1"),
    ("http://user:p@ss@s3cret@example.org/a.jpg", "http://***@example.org/a.jpg"),
    ("ftp://user:s3cret@example.org/a.jpg", "ftp://***@example.org/a.jpg"),
])
def test_credentials_never_appear_in_errors(root: Path, ref: str, shown: str):
    with pytest.raises(ImageError) as info:
        ImageStore(root).check(ref)
    assert shown in str(info.value) and "s3cret" not in str(info.value) and "ss@" not in str(info.value)
    with pytest.raises(ImageError) as info:
        ImageStore(root).resolve(ref)
    assert "s3cret" not in str(info.value)


def test_data_url_size_bound_and_pixels(root: Path):
    good = ImageStore(root, max_side=0).data_url("alpha.png")
    ImageStore(root, max_data_url_bytes=len(good)).check(good)
    with pytest.raises(ImageError) as info:
        ImageStore(root, max_data_url_bytes=len(good) - 1).check(good)
    assert str(info.value).startswith(f"data URL too large: {len(good):,} bytes (limit {len(good) - 1:,} bytes): "
                                      "data:image/png;base64,")
    with pytest.raises(ImageError, match=r"image too large: 600 x 300 \(180,000 pixels; --max-pixels 1,000\)"):
        ImageStore(root, max_pixels=1000).check(good)
    raw = (noisy_jpeg(root / "n.jpg")).read_bytes()
    cut = "data:image/jpeg;base64," + base64.b64encode(raw[: len(raw) * 6 // 10]).decode()
    with pytest.raises(ImageError, match="image is truncated or corrupt: data:image/jpeg"):
        ImageStore(root).check(cut)
    assert len(str(ImageStore(root).data_url(cut))) == len(cut)  # data URLs still pass through


def test_data_url_verdicts_are_cached(root: Path, loads):
    good = ImageStore(root, max_side=0).data_url("a.jpg")
    store = ImageStore(root)
    store.check(good)
    store.check(good)
    assert len(loads) == 1


async def test_acheck(root: Path):
    store = ImageStore(root)
    await store.acheck("a.jpg")
    with pytest.raises(ImageError, match="image is corrupt or not an image: bad.jpg"):
        await store.acheck("bad.jpg")


async def test_acheck_answers_known_verdicts_on_the_loop(root: Path, loads, monkeypatch):
    """A file already judged (same size and mtime) is answered without a worker thread,
    with the words `check` uses; a changed file is decoded again."""
    store = ImageStore(root)
    await store.acheck("a.jpg")
    with pytest.raises(ImageError, match="image is corrupt or not an image: bad.jpg"):
        await store.acheck("bad.jpg")
    decodes = len(loads)

    async def no_thread(*a, **k):
        raise AssertionError("a known verdict went to a worker thread")

    monkeypatch.setattr("evol.images.asyncio.to_thread", no_thread)
    await store.acheck("a.jpg")
    await store.acheck("sub/../a.jpg")  # the same file by another name
    with pytest.raises(ImageError, match="image is corrupt or not an image: bad.jpg"):
        await store.acheck("bad.jpg")
    assert len(loads) == decodes
    monkeypatch.undo()
    for ref, reason in (("gone.jpg", "image not found: gone.jpg"), ("../outside.jpg", "outside the image root"),
                        ("file:a.jpg", "file: scheme")):
        with pytest.raises(ImageError, match=reason):
            await store.acheck(ref)
    save(root / "a.jpg", size=(30, 20))  # a new file under the old name
    (root / "a.jpg").write_bytes((root / "a.jpg").read_bytes()[:40])
    with pytest.raises(ImageError, match="a.jpg"):
        await store.acheck("a.jpg")


@pytest.mark.parametrize("call", ["check", "data_url"])
def test_full_decodes_are_bounded_process_wide(tmp_path: Path, monkeypatch, call: str):
    """Six threads, two slots: the two that got in wait until every other thread has asked
    for a slot, so a missing bound would show as more than two inside at once. No sleeps:
    the timeouts only stop a broken implementation from hanging the suite."""
    n, limit = 6, 2
    cond = threading.Condition()
    state = {"arrived": 0, "active": 0, "peak": 0, "go": False}

    class Slots(threading.BoundedSemaphore):
        def acquire(self, *args, **kwargs):
            with cond:
                state["arrived"] += 1
                cond.notify_all()
            return super().acquire(*args, **kwargs)
        __enter__ = acquire

    real = images_mod._full_decode

    def held(img):
        with cond:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
            cond.notify_all()
            cond.wait_for(lambda: state["go"], timeout=60)
            state["active"] -= 1
        real(img)

    monkeypatch.setattr(images_mod, "_DECODE_SLOTS", Slots(limit))
    monkeypatch.setattr(images_mod, "_full_decode", held)
    for i in range(n):
        save(tmp_path / f"p{i}.png", size=(300, 200), fmt="PNG", color=(i, 2 * i, 3 * i, 255))
    store = ImageStore(tmp_path, max_side=100)
    errors = []

    def work(i):
        try:
            getattr(store, call)(f"p{i}.png")
        except Exception as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    with cond:
        assert cond.wait_for(lambda: state["arrived"] == n and state["active"] == limit, timeout=60)
        assert state["peak"] == limit
        state["go"] = True
        cond.notify_all()
    for t in threads:
        t.join(60)
    assert errors == [] and state["peak"] == limit and state["active"] == 0
