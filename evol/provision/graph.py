"""The scene-graph model the programmatic generators read.

Everything aligns by object index: `objects[i]` has its box, attributes, and (when
present) `masks[i]`; relations name objects by index. Boxes are pixels [x1, y1, x2, y2].
The depth map is H x W uint8 where HIGHER VALUES ARE CLOSER to the camera.
Per-object depth and label counts are computed once per graph and kept, so generators
never reload or recompute them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, TypeVar

import numpy as np

T = TypeVar("T")


class GraphError(ValueError):
    """A scene graph that cannot be used, naming the image."""

    def __init__(self, image_id: str, reason: str):
        super().__init__(f"image {image_id!r}: {reason}")
        self.image_id = image_id
        self.reason = reason

    def __reduce__(self):  # picklable (the parallel seeding path sends them between processes)
        return type(self), (self.image_id, self.reason)


@dataclass
class SGObject:
    label: str
    box: tuple[float, float, float, float]  # pixels x1, y1, x2, y2
    score: float = 1.0
    attributes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Relation:
    subject: int
    predicate: str
    object: int


@dataclass
class SceneGraph:
    image_id: str
    image: str  # path relative to the image root
    width: int
    height: int
    objects: list[SGObject] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    depth: np.ndarray | None = None  # H x W uint8, higher = closer
    masks: list[np.ndarray] | None = None  # one bool H x W mask per object
    caption: str | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # derived data shared by generators (see `derived`); never part of the graph's value
    _derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def validate(self) -> "SceneGraph":
        """Raise `GraphError` naming the image on anything the generators cannot trust."""
        if self.width <= 0 or self.height <= 0:
            raise GraphError(self.image_id, f"bad image size {self.width}x{self.height}")
        for i, ob in enumerate(self.objects):
            x1, y1, x2, y2 = ob.box
            if not (0 <= x1 < x2 <= self.width and 0 <= y1 < y2 <= self.height):
                raise GraphError(self.image_id, f"object {i} ({ob.label}) box {list(ob.box)} "
                                 f"is outside the {self.width}x{self.height} image or empty")
        n = len(self.objects)
        for r in self.relations:
            if not (0 <= r.subject < n and 0 <= r.object < n):
                raise GraphError(self.image_id, f"relation {r.subject} {r.predicate!r} {r.object} "
                                 f"points past the {n} objects")
        if self.depth is not None and self.depth.shape != (self.height, self.width):
            raise GraphError(self.image_id, f"depth map shape {self.depth.shape} differs from "
                             f"the image's {(self.height, self.width)}")
        if self.masks is not None:
            if len(self.masks) != n:
                raise GraphError(self.image_id, f"{len(self.masks)} masks for {n} objects")
            for i, m in enumerate(self.masks):
                if m.shape != (self.height, self.width):
                    raise GraphError(self.image_id, f"mask {i} shape {m.shape} differs from "
                                     f"the image's {(self.height, self.width)}")
                # A mask belongs to its box: clipping it once here lets per-object work
                # (object depth, points on objects) read the box region only.
                x1, y1, x2, y2 = self.objects[i].box
                x1, y1, x2, y2 = int(x1), int(y1), math.ceil(x2), math.ceil(y2)
                if m.flags.writeable:
                    m[:y1] = False
                    m[y2:] = False
                    m[y1:y2, :x1] = False  # the rows outside were just cleared whole
                    m[y1:y2, x2:] = False
                else:
                    clipped = np.zeros_like(m)
                    clipped[y1:y2, x1:x2] = m[y1:y2, x1:x2]
                    self.masks[i] = clipped
        return self

    # -- derived, computed once ---------------------------------------------------------
    def derived(self, key: str, build: Callable[["SceneGraph"], T]) -> T:
        """`build(self)`, computed on the first call with this key and kept with the graph.

        Generators use it for per-graph data several of them need (object lists, counts,
        box texts), so each image pays for it once. Keys are namespaced by the caller
        (e.g. "basic.ranges"). Like the cached properties here, it assumes the graph is
        not changed after the generators start reading it.
        """
        try:
            return self._derived[key]
        except KeyError:
            value = self._derived[key] = build(self)
            return value

    @cached_property
    def label_counts(self) -> Counter:
        return Counter(ob.label for ob in self.objects)

    def unique_label(self, i: int) -> bool:
        return self.label_counts[self.objects[i].label] == 1

    def norm_box(self, i: int, digits: int = 2) -> list[float]:
        """Object i's box normalised to 0-1 (x by width, y by height); a new list each call."""
        if digits == 2:
            return list(self._norm_boxes[i])
        x1, y1, x2, y2 = self.objects[i].box
        w, h = self.width, self.height
        return [round(x1 / w, digits), round(y1 / h, digits), round(x2 / w, digits), round(y2 / h, digits)]

    def norm_boxes(self) -> list[tuple[float, float, float, float]]:
        """Every object's `norm_box` (2 digits), computed once: do not change the list."""
        return self._norm_boxes

    @cached_property
    def _norm_boxes(self) -> list[tuple[float, float, float, float]]:
        w, h = self.width, self.height
        return [(round(x1 / w, 2), round(y1 / h, 2), round(x2 / w, 2), round(y2 / h, 2))
                for x1, y1, x2, y2 in (ob.box for ob in self.objects)]

    @cached_property
    def object_depths(self) -> list[int | None]:
        """Per object: the most frequent depth value inside its mask (box when no masks)."""
        if self.depth is None:
            return [None] * len(self.objects)
        out: list[int | None] = []
        for i, ob in enumerate(self.objects):
            # only the box is scanned: validate() clips each mask to its object's box
            x1, y1 = int(ob.box[0]), int(ob.box[1])
            x2, y2 = math.ceil(ob.box[2]), math.ceil(ob.box[3])
            region = self.depth[y1:y2, x1:x2]
            if self.masks is not None:
                values = region[self.masks[i][y1:y2, x1:x2]]
            else:
                values = region.ravel()
            out.append(int(np.bincount(values, minlength=256).argmax()) if values.size else None)
        return out

    @cached_property
    def instance_map(self) -> np.ndarray | None:
        """H x W int32: index of the smallest object whose mask covers the pixel, -1 for none."""
        if self.masks is None:
            return None
        out = np.full((self.height, self.width), -1, dtype=np.int32)
        order = sorted(range(len(self.masks)), key=lambda i: -int(self.masks[i].sum()))
        for i in order:  # larger first, so smaller objects on top win
            out[self.masks[i]] = i
        return out
