"""Image references: where they live, whether they are usable, and how they are sent.

Records name images by a path relative to the image root (``--image-root``) or by an
http(s) or ``data:`` URL. URLs pass through untouched; local paths are confined to the
root: a path that leaves it (absolute, ``..``, or a symlink pointing elsewhere) is
refused from its name alone, before anything is opened.

Encoding for a request (read, downscale, base64) happens at request time and is kept
in a small LRU, because the same image goes out several times per record (evolve,
judge, every round). File hashes for cache keys are memoised by path, mtime and size.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import stat
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

URL_PREFIXES = ("http://", "https://", "data:")
_PASS_THROUGH = {"JPEG": "image/jpeg", "PNG": "image/png"}


class ImageError(ValueError):
    """An image reference that cannot be used, with a reason naming the reference."""


def is_url(ref: str) -> bool:
    return ref[:8].lower().startswith(URL_PREFIXES)


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


class ImageStore:
    """Resolves, checks, hashes and encodes image references under one root.

    `max_side` bounds the longer side of what is sent (never upscaled); 0 sends the
    original bytes unchanged.
    """

    def __init__(self, root: Path | str | None, max_side: int = 1344, *,
                 cache_items: int = 256, cache_bytes: int = 256 * 1024 * 1024):
        if max_side < 0:
            raise ValueError("max_side must be >= 0")
        self.root = Path(root) if root is not None else None
        self._real_root = os.path.realpath(self.root) if self.root is not None else None
        self.max_side = max_side
        self._encoded = _LRU(cache_items, cache_bytes)
        self._hashes = _LRU(4096)
        self._resolved: dict[str, Path] = {}  # ref -> real path; names only, refusals never stored

    # -- where ----------------------------------------------------------------------
    def resolve(self, ref: str) -> Path:
        """The real path of a local reference; refuses anything outside the root.

        Only names are looked at (``realpath`` follows symlinks without opening files).
        A record's images are resolved several times per round (check, cache key, data
        URL), so accepted references are remembered.
        """
        hit = self._resolved.get(ref) if isinstance(ref, str) else None
        if hit is not None:
            return hit
        if not isinstance(ref, str) or not ref.strip():
            raise ImageError(f"empty image reference: {ref!r}")
        if is_url(ref):
            raise ImageError(f"not a local image path (a URL): {ref}")
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
            st = path.stat()
        except OSError:
            raise ImageError(f"image not found: {ref}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"image not found (not a file): {ref}")
        return path, st

    # -- usable? ----------------------------------------------------------------------
    def check(self, ref: str) -> None:
        """Raise `ImageError` unless the reference can be sent (URLs are not fetched)."""
        if ref[:5].lower() == "data:":
            self._decode_data_url(ref)
            return
        if is_url(ref):
            return
        path, _ = self._stat(ref)
        try:
            with Image.open(path) as img:
                img.verify()
        except OSError as exc:
            if isinstance(exc, PermissionError):
                raise ImageError(f"image cannot be read (permission denied): {ref}") from None
            raise ImageError(f"image is corrupt or not an image: {ref}") from None
        except Exception:  # PIL raises a zoo of errors on broken files
            raise ImageError(f"image is corrupt or not an image: {ref}") from None

    def _decode_data_url(self, ref: str) -> None:
        head, _, payload = ref.partition(",")
        short = ref[:40] + ("..." if len(ref) > 40 else "")
        if not head.lower().startswith("data:image/") or not payload:
            raise ImageError(f"data URL is not an image: {short}")
        try:
            raw = base64.b64decode(payload, validate=False) if head.endswith(";base64") else payload.encode()
            with Image.open(io.BytesIO(raw)) as img:
                img.verify()
        except Exception:
            raise ImageError(f"image is corrupt or not an image: {short}") from None

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
        """A ``data:image/...;base64,...`` URL for a local image; URLs come back as-is."""
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

    @staticmethod
    def _read(path: Path, ref: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"image not found: {ref}") from None
        except OSError as exc:
            raise ImageError(f"image cannot be read ({exc.strerror or 'I/O error'}): {ref}") from None

    def _encode(self, raw: bytes, ref: str) -> tuple[str, bytes]:
        try:
            with Image.open(io.BytesIO(raw)) as img:
                fmt = img.format or ""
                if self.max_side == 0:
                    return Image.MIME.get(fmt, "application/octet-stream"), raw
                oriented = img.getexif().get(0x0112, 1) in (0, 1)
                small = max(img.size) <= self.max_side
                if small and oriented and fmt in _PASS_THROUGH:
                    return _PASS_THROUGH[fmt], raw  # already fine: no re-encoding loss
                img.draft("RGB", (self.max_side, self.max_side))  # fast JPEG DCT scaling
                out = ImageOps.exif_transpose(img)
                if not small or max(out.size) > self.max_side:
                    out.thumbnail((self.max_side, self.max_side), Image.Resampling.BICUBIC,
                                  reducing_gap=2.0)
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
        except Exception:
            raise ImageError(f"image is corrupt or not an image: {ref}") from None


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info)
