"""Image references: where they live, whether they are usable, and how they are sent.

Records name images by a path relative to the image root (``--image-root``) or by an
http(s) or ``data:`` URL. Local paths are confined to the root: a path that leaves it
(absolute, ``..``, or a symlink pointing elsewhere) is refused from its name alone, before
anything is opened. http(s) URLs are fetched by the model server, not by evol, so they are
refused unless asked for (``allow_urls``); any other scheme (``file:``, ``ftp:`` ...) is
refused by name. ``data:`` URLs are bounded in size and checked like files.

A picture is an input fault, found by `ImageStore.check` before any request is made, when it
is missing, not an image, truncated or corrupt, or has more than ``max_pixels`` pixels (read
from the header, before anything is decoded). `check` decodes each file once and remembers
the verdict per (path, size, mtime).

Full decodes (and re-encodes) are the memory-hungry part: a 100-megapixel picture is
~300 MB of pixels. At most `decode_limit()` of them run at once in the whole process,
whatever the request concurrency; JPEGs that will only be sent downscaled are decoded at
a reduced DCT scale (``draft``), a fraction of the memory.

Encoding for a request (read, downscale, base64) happens at request time and is kept
in a small LRU, because the same image goes out several times per record (evolve,
judge, every round). File hashes for cache keys are memoised by path, mtime and size.
Local backends take pixels instead (`ImageStore.load`): the same decode, downscale and
rotation, without the encoding, so every backend shows a model the same picture.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import os
import re
import stat
import struct
import threading
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any, Iterator

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from evol.redact import redact_url

URL_PREFIXES = ("http://", "https://", "data:")
_PASS_THROUGH = {"JPEG": "image/jpeg", "PNG": "image/png"}

DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_DATA_URL_BYTES = 20 * 1024 * 1024

# "scheme:" at the start of a reference (RFC 3986 syntax); one letter is a Windows drive.
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


class ImageError(ValueError):
    """An image reference that cannot be used, with a reason naming the reference."""


def is_url(ref: str) -> bool:
    return ref[:8].lower().startswith(URL_PREFIXES)


def url_scheme(ref: str) -> str | None:
    """The scheme of a reference that names one (``file``, ``ftp``, ``http`` ...), lower-cased;
    None for a plain path, including a Windows path with a drive letter (``C:\\x.jpg``)."""
    m = _SCHEME.match(ref)
    if m is None or len(m.group(1)) == 1:
        return None
    return m.group(1).lower()


# -- at most a few full decodes at once -----------------------------------------------
# Process-wide, not per store: the CLI builds one store, but backends, the cache and tests
# may build more, and memory is one budget. Bounded by cores, since a decode is CPU work
# and more of them at once would only add memory.
_DECODE_SLOTS = threading.BoundedSemaphore(os.cpu_count() or 1)
_decode_limit = os.cpu_count() or 1


def decode_limit() -> int:
    """How many full decodes/encodes may run at once in this process."""
    return _decode_limit


def set_decode_limit(n: int) -> None:
    """Change the bound (call before any work starts: decodes in flight keep their slot of
    the old semaphore)."""
    global _DECODE_SLOTS, _decode_limit
    if n < 1:
        raise ValueError("decode limit must be >= 1")
    _DECODE_SLOTS, _decode_limit = threading.BoundedSemaphore(n), n


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """One of the process's decode slots, for a full decode or encode.

    ``LOAD_TRUNCATED_IMAGES`` is process-wide in Pillow and some libraries turn it on;
    evol must never take a half-grey picture for a good one, so it is pinned off at every
    decode rather than trusted.
    """
    slots = _DECODE_SLOTS  # the semaphore acquired is the one released
    with slots:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        yield


def _full_decode(img: Image.Image) -> None:
    """Decode every pixel (inside `_decoding`); a file that ends early or holds bad data
    raises. Pillow's `verify()` does not decode (a JPEG cut at 60% passes it)."""
    img.load()


def _open_header(fp: IO[bytes], name: str = "") -> ImageFile.ImageFile:
    """`Image.open` without Pillow's decompression-bomb check: reads the header only.

    Pillow warns above its process-wide ``Image.MAX_IMAGE_PIXELS`` (~89M pixels) and
    raises above twice that, as soon as a header is read. evol's own bound (``max_pixels``,
    checked right after this) must decide alone, in both directions: a raised
    ``--max-pixels`` lets a 150-megapixel scan through, and a 20000 x 20000 PNG is "too
    large", not "corrupt". Changing Pillow's global around each open would race with other
    threads, so the format plugins are asked directly, in the order `Image.open` uses.
    """
    Image.preinit()  # the common formats first, as Image.open tries them
    Image.init()
    prefix = fp.read(16)
    for fmt in list(Image.ID):
        factory, accept = Image.OPEN[fmt]
        found = accept(prefix) if accept else True
        if not found or isinstance(found, str):  # a str is Pillow's "looks like X, unsupported"
            continue
        fp.seek(0)
        try:
            return factory(fp, name)
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # what Image.open treats as "not this format"
    raise UnidentifiedImageError("cannot identify image file")


class _LRU:
    """A tiny thread-safe LRU bounded by entry count and (optionally) total size."""

    def __init__(self, max_items: int, max_bytes: int | None = None):
        self.max_items, self.max_bytes = max_items, max_bytes
        self._data: OrderedDict[Any, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> str | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Any, value: str) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._data[key] = value
            self._bytes += len(value)
            while self._data and (
                len(self._data) > self.max_items
                or (self.max_bytes is not None and self._bytes > self.max_bytes and len(self._data) > 1)
            ):
                _, dropped = self._data.popitem(last=False)
                self._bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._data)


_OK = ""  # the verdict of a usable image; any other verdict is the reason it is not


class ImageStore:
    """Resolves, checks, hashes and encodes image references under one root.

    `max_side` bounds the longer side of what is sent (never upscaled); 0 sends the
    original bytes unchanged. `max_pixels` bounds width x height of any image, local or
    ``data:``. `allow_urls` lets http(s) references through `check` (the model server
    fetches them). `max_data_url_bytes` bounds a ``data:`` reference's length.
    """

    def __init__(self, root: Path | str | None, max_side: int = 1344, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS, allow_urls: bool = False,
                 max_data_url_bytes: int = DEFAULT_MAX_DATA_URL_BYTES,
                 cache_items: int = 256, cache_bytes: int = 256 * 1024 * 1024):
        if max_side < 0:
            raise ValueError("max_side must be >= 0")
        if max_pixels < 1:
            raise ValueError("max_pixels must be >= 1")
        if max_data_url_bytes < 1:
            raise ValueError("max_data_url_bytes must be >= 1")
        self.root = Path(root) if root is not None else None
        self._real_root = os.path.realpath(self.root) if self.root is not None else None
        self.max_side = max_side
        self.max_pixels = max_pixels
        self.allow_urls = allow_urls
        self.max_data_url_bytes = max_data_url_bytes
        self._encoded = _LRU(cache_items, cache_bytes)
        self._hashes = _LRU(4096)
        # check() verdicts: (real path, size, mtime_ns) or ("data:", sha256) -> reason or _OK
        self._verdicts = _LRU(4096)
        self._resolved: dict[str, Path] = {}  # ref -> real path; names only, refusals never stored

    # -- where ----------------------------------------------------------------------
    def resolve(self, ref: str) -> Path:
        """The real path of a local reference; refuses anything outside the root.

        Only names are looked at (``realpath`` follows symlinks without opening files).
        A reference with a URL scheme other than http(s)/data (``file:``, ``ftp:`` ...) is
        refused by its scheme: read as a path it would only ever be "not found", which
        hides what is wrong with it. A record's images are resolved several times per
        round (check, cache key, data URL), so accepted references are remembered.
        """
        hit = self._resolved.get(ref) if isinstance(ref, str) else None
        if hit is not None:
            return hit
        if not isinstance(ref, str) or not ref.strip():
            raise ImageError(f"empty image reference: {ref!r}")
        if is_url(ref):
            raise ImageError(f"not a local image path (a URL): {redact_url(ref)}")
        scheme = url_scheme(ref)
        if scheme is not None:
            raise ImageError(f"image reference uses the {scheme}: scheme, which is not supported: {redact_url(ref)}")
        if self._real_root is None:
            raise ImageError(f"local image path but no --image-root given: {ref}")
        if "\x00" in ref:
            raise ImageError(f"image path contains a NUL byte: {ref!r}")
        candidate = Path(ref)
        if not candidate.is_absolute():
            candidate = Path(self._real_root) / candidate
        real = os.path.realpath(candidate)
        if real != self._real_root and not real.startswith(self._real_root.rstrip(os.sep) + os.sep):
            raise ImageError(f"image path is outside the image root: {ref}")
        path = Path(real)
        if len(self._resolved) >= 65_536:
            self._resolved.clear()
        self._resolved[ref] = path
        return path

    def _stat(self, ref: str) -> tuple[Path, os.stat_result]:
        path = self.resolve(ref)
        try:
            st = os.stat(str(path))  # str(Path) is cached; Path.stat costs a few us more
        except OSError:
            raise ImageError(f"image not found: {ref}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"image not found (not a file): {ref}")
        return path, st

    # -- usable? ----------------------------------------------------------------------
    def check(self, ref: str) -> None:
        """Raise `ImageError` unless the reference can be sent.

        http(s) URLs are not fetched: they pass only with `allow_urls`. A local file or a
        ``data:`` URL is decoded in full once (under the process-wide decode bound) and
        the verdict is remembered, so checking an unchanged file again costs a stat.
        """
        if not isinstance(ref, str) or not ref.strip():
            raise ImageError(f"empty image reference: {ref!r}")
        if ref[:5].lower() == "data:":
            self._check_data_url(ref)
            return
        if is_url(ref):
            if not self.allow_urls:
                raise ImageError(f"image URL not allowed: {redact_url(ref)} "
                                 "(pass --allow-image-urls to let the model server fetch it)")
            return
        path, st = self._stat(ref)  # refuses other schemes, escapes and missing files by name
        key = (str(path), st.st_size, st.st_mtime_ns)
        verdict = self._verdicts.get(key)
        if verdict is None:
            try:
                fp = open(path, "rb")
            except PermissionError:
                raise ImageError(f"image cannot be read (permission denied): {ref}") from None
            except FileNotFoundError:
                raise ImageError(f"image not found: {ref}") from None
            except OSError as exc:
                raise ImageError(f"image cannot be read ({exc.strerror or 'I/O error'}): {ref}") from None
            with fp:
                verdict = self._inspect(fp, ref)
            self._verdicts.put(key, verdict)
        if verdict != _OK:
            raise ImageError(f"{verdict}: {ref}")

    async def acheck(self, ref: str) -> None:
        """`check` that decodes in a worker thread (keeps the event loop free). A file
        whose verdict is known (same path, size and mtime) costs a stat on the loop, not a
        trip to a thread."""
        if isinstance(ref, str) and ref.strip() and url_scheme(ref) is None and "\x00" not in ref:
            try:
                path, st = self._stat(ref)
            except ImageError:
                pass  # `check` says what is wrong, with its own words
            else:
                verdict = self._verdicts.get((str(path), st.st_size, st.st_mtime_ns))
                if verdict is not None:
                    if verdict != _OK:
                        raise ImageError(f"{verdict}: {ref}")
                    return
        await asyncio.to_thread(self.check, ref)

    def _check_data_url(self, ref: str) -> None:
        short = ref[:40] + ("..." if len(ref) > 40 else "")
        if len(ref) > self.max_data_url_bytes:
            raise ImageError(f"data URL too large: {len(ref):,} bytes (limit {self.max_data_url_bytes:,} bytes): "
                             f"{short}")
        head, _, payload = ref.partition(",")
        if not head.lower().startswith("data:image/") or not payload:
            raise ImageError(f"data URL is not an image: {short}")
        key = ("data:", hashlib.sha256(ref.encode("utf-8", "surrogatepass")).digest())
        verdict = self._verdicts.get(key)
        if verdict is None:
            try:
                raw = _data_url_bytes(ref)
            except Exception:
                verdict = "image is corrupt or not an image"
            else:
                verdict = self._inspect(io.BytesIO(raw), short)
            self._verdicts.put(key, verdict)
        if verdict != _OK:
            raise ImageError(f"{verdict}: {short}")

    def _inspect(self, fp: IO[bytes], ref: str) -> str:
        """The verdict on one image stream: `_OK`, or the reason (without the reference).

        The pixel count comes from the header, before anything is decoded. Then one full
        decode, at a reduced JPEG scale when only a downscaled copy will ever be sent: the
        entropy-coded data is still read to its end, so truncation is still found.
        """
        try:
            img = _open_header(fp)
        except Exception:  # PIL raises a zoo of errors on broken headers
            return "image is corrupt or not an image"
        with contextlib.closing(img):  # frees the pixels now, not at the next GC
            too_large = self._too_large(img.size)
            if too_large:
                return too_large
            try:
                with _decoding():
                    if self._downscaled(img.size):
                        img.draft("RGB", (self.max_side, self.max_side))
                    _full_decode(img)
            except Image.DecompressionBombError:  # a plugin's own check (animated GIF frames)
                return f"image too large (--max-pixels {self.max_pixels:,})"
            except MemoryError:  # not the picture's fault: do not remember it
                raise ImageError(f"image cannot be decoded (out of memory): {ref}") from None
            except Exception:
                return "image is truncated or corrupt"
        return _OK

    def _too_large(self, size: tuple[int, int]) -> str | None:
        w, h = size
        if w * h <= self.max_pixels:
            return None
        return f"image too large: {w} x {h} ({w * h:,} pixels; --max-pixels {self.max_pixels:,})"

    def _downscaled(self, size: tuple[int, int]) -> bool:
        """Whether only a copy smaller than the original will be sent."""
        return self.max_side > 0 and max(size) > self.max_side

    # -- identity ---------------------------------------------------------------------
    def content_hash(self, ref: str) -> str:
        """sha256 of the file's bytes (URLs: of the URL string)."""
        if is_url(ref):
            return hashlib.sha256(ref.encode()).hexdigest()
        path, st = self._stat(ref)
        key = (str(path), st.st_mtime_ns, st.st_size)
        digest = self._hashes.get(key)
        if digest is None:
            digest = hashlib.sha256(self._read(path, ref)).hexdigest()
            self._hashes.put(key, digest)
        return digest

    # -- what goes over the wire --------------------------------------------------------
    def data_url(self, ref: str) -> str:
        """A ``data:image/...;base64,...`` URL for a local image; URLs come back as-is
        (whether a URL may be sent at all is `check`'s decision)."""
        if is_url(ref):
            return ref
        path, st = self._stat(ref)
        key = (str(path), st.st_mtime_ns, st.st_size, self.max_side)
        url = self._encoded.get(key)
        if url is None:
            mime, data = self._encode(self._read(path, ref), ref)
            url = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
            self._encoded.put(key, url)
        return url

    async def adata_url(self, ref: str) -> str:
        """`data_url` that encodes in a worker thread on a cache miss (keeps the loop free)."""
        if is_url(ref):
            return ref
        path, st = self._stat(ref)
        hit = self._encoded.get((str(path), st.st_mtime_ns, st.st_size, self.max_side))
        if hit is not None:
            return hit
        return await asyncio.to_thread(self.data_url, ref)

    def load(self, ref: str) -> Image.Image:
        """The picture as a model is shown it, as pixels (RGB): decoded, downscaled to
        `max_side` and turned upright exactly as `data_url` does before encoding; for local
        backends, which take pixels rather than bytes. A ``data:`` URL is decoded; an
        http(s) URL is refused (a local backend fetches nothing)."""
        if ref[:5].lower() == "data:":
            try:
                raw = _data_url_bytes(ref)
            except Exception:
                raise ImageError(f"image is corrupt or not an image: {ref[:40]}...") from None
        elif is_url(ref):
            raise ImageError(f"remote images are not fetched by a local backend: {redact_url(ref)}")
        else:
            raw = self._read(self._stat(ref)[0], ref)
        try:
            img = _open_header(io.BytesIO(raw))
        except Exception:
            raise ImageError(f"image is corrupt or not an image: {ref[:80]}") from None
        with contextlib.closing(img):
            too_large = self._too_large(img.size)
            if too_large:
                raise ImageError(f"{too_large}: {ref[:80]}")
            try:
                with _decoding():
                    out = self._upright(img, self._draft(img))
                    return out.convert("RGB")  # a copy: `img` is closed on return
            except MemoryError:
                raise ImageError(f"image cannot be decoded (out of memory): {ref[:80]}") from None
            except Exception:
                raise ImageError(f"image is corrupt or not an image: {ref[:80]}") from None

    def _draft(self, img: Image.Image) -> bool:
        """Whether only a downscaled copy of `img` is wanted; if so, a JPEG is set to decode
        at a reduced DCT scale (fast, a fraction of the memory). Inside `_decoding`."""
        big = self._downscaled(img.size)
        if big:
            img.draft("RGB", (self.max_side, self.max_side))
        return big

    def _upright(self, img: Image.Image, big: bool) -> Image.Image:
        """`img` decoded in full, shrunk to `max_side` when `big`, then turned upright by its
        EXIF orientation (shrunk first: a rotated full-size copy would double the memory, and
        the box is square, so the size comes out the same). Inside `_decoding`."""
        _full_decode(img)
        if big:
            img.thumbnail((self.max_side, self.max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
        return ImageOps.exif_transpose(img)

    @staticmethod
    def _read(path: Path, ref: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"image not found: {ref}") from None
        except OSError as exc:
            raise ImageError(f"image cannot be read ({exc.strerror or 'I/O error'}): {ref}") from None

    def _encode(self, raw: bytes, ref: str) -> tuple[str, bytes]:
        """The bytes to send and their MIME type.

        Originals go as they are when ``max_side`` is 0, or when they are a JPEG/PNG that
        already fits and needs no EXIF rotation. Otherwise one decode (a reduced JPEG scale
        when downscaling), shrink first and rotate the small copy (a rotated full-size copy
        would double the memory), re-encode; all of it inside a decode slot.
        """
        try:
            img = _open_header(io.BytesIO(raw))
        except Exception:
            raise ImageError(f"image is corrupt or not an image: {ref}") from None
        with contextlib.closing(img):  # frees the pixels now, not at the next GC
            too_large = self._too_large(img.size)
            if too_large:
                raise ImageError(f"{too_large}: {ref}")
            fmt = img.format or ""
            if self.max_side == 0:
                return Image.MIME.get(fmt, "application/octet-stream"), raw
            try:
                with _decoding():
                    big = self._draft(img)
                    oriented = img.getexif().get(0x0112, 1) in (0, 1)  # a PNG decodes here
                    if not big and oriented and fmt in _PASS_THROUGH:
                        return _PASS_THROUGH[fmt], raw  # already fine: no re-encoding loss
                    out = self._upright(img, big)
                    buf = io.BytesIO()
                    if _has_alpha(out):
                        out = out if out.mode in ("RGBA", "LA") else out.convert("RGBA")
                        out.save(buf, "PNG", optimize=False)
                        return "image/png", buf.getvalue()
                    if out.mode != "RGB":
                        out = out.convert("RGB")
                    out.save(buf, "JPEG", quality=90)
                    return "image/jpeg", buf.getvalue()
            except ImageError:
                raise
            except MemoryError:
                raise ImageError(f"image cannot be decoded (out of memory): {ref}") from None
            except Exception:
                raise ImageError(f"image is corrupt or not an image: {ref}") from None


def _data_url_bytes(ref: str) -> bytes:
    """The bytes a ``data:`` URL carries (base64 or plain)."""
    head, _, payload = ref.partition(",")
    return base64.b64decode(payload, validate=False) if head.endswith(";base64") else payload.encode()


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info)
