"""What the scene-graph loaders share: names, attribute and predicate normalisation, safe
file paths, and reading depth maps and instance masks.

Safety: instance masks are pickles, and unpickling can run code. `load_mask_file` builds
nothing but numpy arrays and scipy sparse matrices (anything else is refused), and the
loaders call it only on files inside a folder the user named (`inside` keeps a recorded
file name from climbing out of it). Mask and depth files may be gzip-compressed (detected
by their first bytes), which keeps shipped samples small.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path, PurePath
from typing import Any, Sequence

import numpy as np

from evol.provision.graph import GraphError
from evol.provision.vocab import normalize_attribute

__all__ = [
    "PathLike",
    "DROPPED_PREDICATES",
    "image_name",
    "predicate",
    "attributes",
    "index",
    "inside",
    "read_bytes",
    "load_mask_file",
    "read_masks",
    "load_depth",
    "find_depth",
]

PathLike = str | Path

# Predicates that only say "belongs to" and carry no spatial or semantic content.
DROPPED_PREDICATES = frozenset({"of"})

_GZIP_MAGIC = b"\x1f\x8b"
_NPY_MAGIC = b"\x93NUMPY"


# ---------------------------------------------------------------------------------------
# names and words
# ---------------------------------------------------------------------------------------
def image_name(data_path: str | None, image_root: Path | None) -> str:
    """The image path a graph records: relative to `image_root` when the (possibly stale)
    `data_path` lies under it, else just the file name."""
    if not data_path:
        return ""
    p = Path(str(data_path))
    if image_root is not None:
        root = Path(image_root)
        if p.is_absolute():
            for base in (root, root.resolve()):
                try:
                    return p.relative_to(base).as_posix()
                except ValueError:
                    pass
            try:
                return p.resolve().relative_to(root.resolve()).as_posix()
            except (ValueError, OSError):
                pass
        elif ".." not in p.parts and (root / p).exists():
            return p.as_posix()
    return p.name


def predicate(text: Any) -> str:
    return " ".join(str(text).strip().lower().split())


def attributes(words: Any) -> list[str]:
    """Normalise one object's attribute list ("grey and white" -> gray, white)."""
    if words is None:
        return []
    if isinstance(words, str):
        words = [words]
    out: list[str] = []
    for w in words:
        for a in normalize_attribute(str(w)):
            if a not in out:
                out.append(a)
    return out


def index(v: Any) -> int:
    """An object index written as an int, an integral float or a digit string."""
    if isinstance(v, bool):
        raise ValueError(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    raise ValueError(v)


# ---------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------
def read_bytes(path: Path) -> bytes:
    data = Path(path).read_bytes()
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    return data


def inside(folder: Path, name: str) -> Path | None:
    """`folder / name` when that stays inside `folder`; None for names that try to leave it
    (absolute paths keep only their file name)."""
    p = PurePath(str(name))
    if p.is_absolute():
        p = PurePath(p.name)
    if not p.parts or ".." in p.parts:
        return None
    return Path(folder) / p


# ---------------------------------------------------------------------------------------
# masks: restricted unpickling
# ---------------------------------------------------------------------------------------
_SPARSE_CLASSES = frozenset(
    f"{kind}_{form}" for kind in ("csr", "csc", "coo", "lil", "dok", "bsr", "dia")
    for form in ("matrix", "array"))
_SPARSE_MODULES = frozenset(
    ["scipy.sparse"]
    + [f"scipy.sparse.{prefix}{kind}" for prefix in ("", "_") for kind in
       ("csr", "csc", "coo", "lil", "dok", "bsr", "dia", "base", "_base", "compressed", "data")])
_NUMPY_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy", "bool_"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"), ("copyreg", "_reconstructor"), ("builtins", "object"),
})


class _MaskUnpickler(pickle.Unpickler):
    """Builds only numpy arrays/dtypes and scipy sparse matrices; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS or module.startswith("numpy.dtypes") and name.endswith("DType"):
            return super().find_class(module, name)
        if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"mask pickle asks for {module}.{name}, which is not allowed")


def load_mask_file(path: PathLike) -> list[Any]:
    """Read a mask file (plain or gzip-compressed): a pickled list with one scipy sparse
    boolean matrix (or numpy array) per object, as ProVision writes them, or a ``.npy``
    array of shape (objects, H, W) (read without pickles). Returns the masks as stored,
    not densified. Only call this on files from a folder the user named."""
    data = read_bytes(Path(path))
    if data[:6] == _NPY_MAGIC:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.ndim != 3:
            raise ValueError(f"expected an array of masks (objects, height, width), found shape {arr.shape}")
        return list(arr)
    obj = _MaskUnpickler(io.BytesIO(data)).load()
    if not isinstance(obj, (list, tuple)):
        raise ValueError(f"expected a list of masks, found {type(obj).__name__}")
    return list(obj)


def _mask_names(name: str) -> list[str]:
    """The file names a recorded mask id may have on disk: itself, and for ``X.npy`` also
    ``X.pkl`` (ProVision's docs name mask files ``<image>_mask.npy``, its code writes
    ``<image>_mask.pkl``)."""
    names = [name]
    if name.endswith(".npy"):
        names.append(name[:-4] + ".pkl")
    return names


def _dense_masks(image_id: str, stored: list[Any], height: int, width: int) -> list[np.ndarray]:
    out = []
    for i, m in enumerate(stored):
        shape = tuple(getattr(m, "shape", ()))
        if shape != (height, width):  # check before densifying anything large
            raise GraphError(image_id, f"mask {i} shape {shape} differs from the image's {(height, width)}")
        dense = m.toarray() if hasattr(m, "toarray") else np.asarray(m)
        out.append(dense.astype(bool, copy=False))
    return out


def read_masks(image_id: str, masks_dir: Path, mask_id: str, n: int, height: int, width: int,
               *, where: str = "masks_dir") -> list[np.ndarray]:
    """The `n` dense boolean masks of an image from the file `mask_id` in `masks_dir` (the
    only folder looked in; `where` names it in messages); raises `GraphError`."""
    first = inside(masks_dir, mask_id)
    if first is None:
        raise GraphError(image_id, f"seg_mask_id {mask_id!r} points outside {where}")
    path = next((p for p in (inside(masks_dir, m) for m in _mask_names(mask_id)) if p is not None and p.is_file()),
                None)
    if path is None:
        raise GraphError(image_id, f"mask file {mask_id!r} is missing from {masks_dir}")
    try:
        stored = load_mask_file(path)
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, or refused pickle
        raise GraphError(image_id, f"mask file {mask_id!r} cannot be read: {e}") from None
    if len(stored) != n:
        raise GraphError(image_id, f"{len(stored)} masks for {n} objects")
    return _dense_masks(image_id, stored, height, width)


# ---------------------------------------------------------------------------------------
# depth maps
# ---------------------------------------------------------------------------------------
def find_depth(image_id: str, folders: Sequence[Path], depth_id: str) -> Path:
    """The file `depth_id` in the first of `folders` that has it; raises `GraphError` when
    the name leaves them or no folder has it."""
    paths = [inside(f, depth_id) for f in folders]
    if not paths or any(p is None for p in paths):
        raise GraphError(image_id, f"depth_mask_id {depth_id!r} points outside {folders[0] if folders else '?'}")
    for p in paths:
        if p.is_file():
            return p
    where = " or ".join(str(f) for f in folders)
    raise GraphError(image_id, f"depth file {Path(depth_id).name!r} is missing from {where}")


def load_depth(image_id: str, path: Path) -> np.ndarray:
    """A uint8 H x W depth map (higher = closer) from a ``.npy`` file; raises `GraphError`."""
    if not path.is_file():
        raise GraphError(image_id, f"depth file {path.name!r} is missing from {path.parent}")
    try:
        depth = np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any decoding failure means an unusable file
        raise GraphError(image_id, f"depth file {path.name!r} cannot be read: {e}") from None
    if not isinstance(depth, np.ndarray):
        raise GraphError(image_id, f"depth file {path.name!r} holds no single array")
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.dtype != np.uint8:
        if np.issubdtype(depth.dtype, np.integer) and depth.size and 0 <= depth.min() and depth.max() <= 255:
            depth = depth.astype(np.uint8)
        else:
            raise GraphError(image_id, f"depth map {path.name!r} is {depth.dtype}, expected uint8 "
                             "(0-255, higher = closer)")
    return depth
