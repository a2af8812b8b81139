"""Single-image spatial generators 14-21 of ProVision (arXiv 2412.07012), written anew:
points on objects, and depth comparisons.

Points are written as normalised (x, y) with two decimals. Every point is drawn on the
two-decimal grid, so the coordinates in the text name exactly the pixel that was checked:
grid value k/100 denotes pixel column floor(k * width / 100) (rows likewise).

A point counts as lying on an object only where that object's mask, and no other mask,
covers it and a few pixels around it (background: no mask at all). There
`SceneGraph.instance_map` names the same object, but the check is a handful of scalar
reads instead of a whole-image map (about 2 ms on a 640x480 image with ten masks), and it
keeps points off overlaps and edges, where "the same object" would be ambiguous. Like
`SceneGraph.object_depths`, it takes a mask to lie inside its object's box.

Depth follows the graph's convention: HIGHER depth values are CLOSER to the camera. (The
public reference inverted this for its point generators; here a point or object with the
larger value is the closer one.) Comparisons need a gap of at least `ctx.depth_gap`.

The binary questions here ("which of two ...") take the two candidates as their options in
multiple-choice form, and never pit two names that may mean one thing ("the person", "the
batter") against each other.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np

from evol.provision.base import (FILL, QA, DrawnGenerator, GenContext, LastGraph, RarePool, box_texts,
                                 maybe_options, register)
from evol.provision.graph import SceneGraph
from evol.provision.vocab import may_name_same

_TRIES = 24  # draws per point before an object is given up for this question
_PAIR_TRIES = 40  # draws per depth question before the point generators give up


# -- shared helpers ----------------------------------------------------------------------
def _name(graph: SceneGraph, i: int) -> str:
    """How an object is named in text: its label when unique, else label and box."""
    label = graph.objects[i].label
    return label if graph.unique_label(i) else f"{label} at {box_texts(graph)[i]}"


def _label_counts(graph: SceneGraph, ctx: GenContext) -> list[int]:
    """Dataset count of each object's label, for favouring rare ones."""
    freq = ctx.freq.objects
    return [freq.get(ob.label, 0) for ob in graph.objects]


def _fmt_point(kx: int, ky: int) -> str:
    return f"({kx / 100:.2f}, {ky / 100:.2f})"


def _options(rng: random.Random, ctx: GenContext, answer: str, others: Sequence[str]) -> list[str]:
    """The two candidates as options (in random order) for an MC draw, else none."""
    return maybe_options(rng, ctx, answer, others, len(others) + 1)


class _Points:
    """Per-graph helpers shared by the generators here: point sampling on the two-decimal
    grid with instance ownership, depth reads, and object names."""

    def __init__(self, graph: SceneGraph):
        self.graph = graph
        self.w, self.h = graph.width, graph.height
        # flat byte views of the masks (no copies for ordinary contiguous arrays): reading
        # one pixel is then a plain memoryview index, several times cheaper than mask[y, x]
        self.masks = [memoryview(np.ascontiguousarray(m, dtype=bool).reshape(-1).view(np.uint8))
                      for m in graph.masks or []]
        self.margin = max(1, round(min(self.w, self.h) * 0.01))
        # pixel ranges [x1, x2) x [y1, y2) read per object, as object_depths reads them
        self.boxes = [(int(b[0]), int(b[1]), math.ceil(b[2]), math.ceil(b[3]))
                      for b in (ob.box for ob in graph.objects)]
        self._overlap: dict[int, list[int]] = {}
        self._names: list[str] | None = None
        self.labels = [ob.label for ob in graph.objects]
        self._grids: dict[int, tuple[int, int, int, int] | None] = {}
        self._depth_pairs: dict[int, list[tuple[int, int]]] = {}
        self._anchor_pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._flat_depth: memoryview | bool | None = None  # see depth_span

    def depth_pairs(self, depths: list[int | None], gap: int) -> list[tuple[int, int]]:
        """Pairs (i < j) of differently named objects whose depths differ by at least `gap`
        (shared by the closer / farther object generators; a new list each call)."""
        pairs = self._depth_pairs.get(gap)
        if pairs is None:
            valid = [i for i, d in enumerate(depths) if d is not None]
            pairs = self._depth_pairs[gap] = [(i, j) for k, i in enumerate(valid) for j in valid[k + 1:]
                                              if abs(depths[i] - depths[j]) >= gap and self.apart(i, j)]
        return list(pairs)

    def apart(self, i: int, j: int) -> bool:
        """Objects i and j are named apart: their names differ, and neither label may name
        the other's object ("the person" might be "the batter"), so the wrong one of the two
        is never also right. Objects of one label are told apart by their boxes."""
        names = self._names or self.names()
        if names[i] == names[j]:
            return False
        a, b = self.labels[i], self.labels[j]
        return a == b or not may_name_same(a, b)

    def names(self) -> list[str]:
        """Every object's name in text (label, plus its box when the label repeats)."""
        if self._names is None:
            g = self.graph
            self._names = [_name(g, i) for i in range(len(g.objects))]
        return self._names

    def pixel(self, kx: int, ky: int) -> tuple[int, int]:
        return (kx * self.w) // 100, (ky * self.h) // 100

    def _neighbourhood(self, px: int, py: int) -> list[tuple[int, int]]:
        m, w, h = self.margin, self.w, self.h
        return [(px, py), (max(0, px - m), py), (min(w - 1, px + m), py),
                (px, max(0, py - m)), (px, min(h - 1, py + m))]

    def _overlapping(self, i: int) -> list[int]:
        """Objects whose boxes meet object i's box: the only masks that can cover its pixels."""
        got = self._overlap.get(i)
        if got is None:
            a1, b1, a2, b2 = self.boxes[i]
            got = self._overlap[i] = [j for j, (x1, y1, x2, y2) in enumerate(self.boxes)
                                      if j != i and x1 < a2 and a1 < x2 and y1 < b2 and b1 < y2]
        return got

    def solid(self, px: int, py: int, who: int) -> bool:
        """The pixel and its neighbours at `margin` are covered by `who`'s mask and no other
        (who = -1: by no mask at all). Exclusive cover means `instance_map` gives `who`
        there too, and keeps points off overlaps such as a shirt on a person, where
        "the same object" would be ambiguous. As in `SceneGraph.object_depths`, a mask is
        read only inside its object's box, so masks away from the point cost nothing."""
        w, m = self.w, self.margin
        xl = px - m if px > m else 0
        xr = px + m if px + m < w else w - 1
        yt = py - m if py > m else 0
        yb = py + m if py + m < self.h else self.h - 1
        near = ((px, py), (xl, py), (xr, py), (px, yt), (px, yb))
        if who >= 0:
            x1, y1, x2, y2 = self.boxes[who]
            if not (x1 <= xl and xr < x2 and y1 <= yt and yb < y2):
                return False
            mask = self.masks[who]
            for x, y in near:
                if not mask[y * w + x]:
                    return False
            others = self._overlapping(who)
        else:
            others = range(len(self.masks))
        for j in others:
            x1, y1, x2, y2 = self.boxes[j]
            if xr < x1 or xl >= x2 or yb < y1 or yt >= y2:
                continue
            mask = self.masks[j]
            for x, y in near:
                if x1 <= x < x2 and y1 <= y < y2 and mask[y * w + x]:
                    return False
        return True

    def object_at(self, px: int, py: int) -> int | None:
        """The one object whose mask covers the pixel; -1 for none or several, None without masks."""
        if not self.masks:
            return None
        w = self.w
        hits = [j for j, (x1, y1, x2, y2) in enumerate(self.boxes)
                if x1 <= px < x2 and y1 <= py < y2 and self.masks[j][py * w + px]]
        return hits[0] if len(hits) == 1 else -1

    @staticmethod
    def grid_range(lo: float, hi: float, size: int) -> tuple[int, int]:
        """Grid values k whose pixel floor(k * size / 100) lies inside [lo, hi)."""
        p_lo = max(0, math.ceil(lo))
        p_hi = min(size - 1, math.ceil(hi) - 1)
        k_lo = -(-100 * p_lo // size)
        k_hi = min(99, -(-100 * (p_hi + 1) // size) - 1)
        return k_lo, k_hi

    def _grid(self, i: int) -> tuple[int, int, int, int] | None:
        """(first kx, number of kx, first ky, number of ky) of the grid points in object i's
        box, or None when the box holds none."""
        if i not in self._grids:
            x1, y1, x2, y2 = self.graph.objects[i].box
            kx_lo, kx_hi = self.grid_range(x1, x2, self.w)
            ky_lo, ky_hi = self.grid_range(y1, y2, self.h)
            ok = kx_lo <= kx_hi and ky_lo <= ky_hi
            self._grids[i] = (kx_lo, kx_hi - kx_lo + 1, ky_lo, ky_hi - ky_lo + 1) if ok else None
        return self._grids[i]

    def sample_in(self, rng: random.Random, i: int, avoid: Sequence[tuple[int, int]] = ()) -> tuple[int, int] | None:
        """A grid point firmly inside object i (as its instance owner), or None."""
        grid = self._grid(i)
        if grid is None:
            return None
        kx_lo, nx, ky_lo, ny = grid
        draw, solid, w, h = rng.random, self.solid, self.w, self.h
        for _ in range(_TRIES):
            kx = kx_lo + int(draw() * nx)
            ky = ky_lo + int(draw() * ny)
            k = (kx, ky)
            if k not in avoid and solid((kx * w) // 100, (ky * h) // 100, i):  # self.pixel(kx, ky)
                return k
        return None

    def sample_background(self, rng: random.Random) -> tuple[int, int] | None:
        for _ in range(_TRIES):
            k = (int(rng.random() * 100), int(rng.random() * 100))
            if self.solid(*self.pixel(*k), -1):
                return k
        return None

    def depth_span(self, kx: int, ky: int) -> tuple[int, int]:
        """Lowest and highest depth value around the point (higher = closer)."""
        if self._flat_depth is None:
            d = self.graph.depth
            # a flat memoryview reads a uint8 pixel as a plain int, like the masks above
            self._flat_depth = (memoryview(np.ascontiguousarray(d).reshape(-1)) if d.dtype == np.uint8
                                else False)
        px, py = self.pixel(kx, ky)
        if self._flat_depth is False:
            d = self.graph.depth
            vals = [int(d[y, x]) for x, y in self._neighbourhood(px, py)]
        else:
            flat, w = self._flat_depth, self.w
            vals = [flat[y * w + x] for x, y in self._neighbourhood(px, py)]
        return min(vals), max(vals)

    def anchor_pairs(self, c: int, depths: list[int | None], gap: int) -> list[tuple[int, int]]:
        """Pairs (i, j) of objects named apart from each other and from anchor c whose depth
        distances to c differ by at least `gap` (shared by the two anchor generators; a new
        list each call)."""
        found = self._anchor_pairs.get((c, gap))
        if found is None:
            valid = [i for i, d in enumerate(depths) if d is not None]
            dc = depths[c]
            rest = [(i, abs(depths[i] - dc)) for i in valid if i != c and self.apart(i, c)]
            found = self._anchor_pairs[(c, gap)] = [
                (i, j) for m, (i, di) in enumerate(rest) for j, dj in rest[m + 1:]
                if abs(di - dj) >= gap and self.apart(i, j)]
        return list(found)


_points = LastGraph(_Points)  # the helpers of the graph asked about last, shared by the generators here


# -- the template, as the generators here use it ------------------------------------------
class _Spatial(DrawnGenerator):
    """Drawn until `n` QAs are written (a drawn object or pair may yield none); the two
    candidates of a binary question are its options in multiple-choice form."""

    draw = FILL
    closer = True  # the closer / farther twin of each question
    skills = ("grounding", "relationship description")
    near_q: tuple[str, ...] = ()
    far_q: tuple[str, ...] = ()

    def wordings(self) -> list[str]:
        return list(self.near_q if self.closer else self.far_q)

    def binary(self, rng: random.Random, ctx: GenContext, near: str, far: str, objects: list[str],
               metadata: dict, **fields: str) -> QA:
        """The QA whose answer is `near` (closer) or `far` (farther), the other its rival."""
        answer, wrong = (near, far) if self.closer else (far, near)
        question = self.say(rng, self.near_q if self.closer else self.far_q, **fields)
        return self.qa(question, answer, _options(rng, ctx, answer, [wrong]), objects, metadata)


class _Scene:
    """What the depth generators read per call: the points helper, the object names and
    depths, the depth gap, and the dataset count of each object's label."""

    def __init__(self, g: SceneGraph, ctx: GenContext, depths: list[int | None]):
        self.g, self.depths, self.gap = g, depths, ctx.depth_gap
        self.pts = _points(g)
        self.names = self.pts.names()
        self.cnt = _label_counts(g, ctx)


# -- 14-15: which point lies on the same object as an anchor point -------------------------
_SAME = (
    "The point {a} lies on an object in the image. Which of the points {p} and {q} lies on that same object?",
    "Which of {p} and {q} is on the same object as the point {a}?",
    "Take the point {a}. Does {p} or {q} belong to the same object as it?",
    "Coordinates are normalised (x, y). Which point, {p} or {q}, falls on the same object as {a}?",
    "Of the two points {p} and {q}, which one marks the same object that {a} marks?",
)
_DIFFERENT = (
    "The point {a} lies on an object in the image. Which of the points {p} and {q} does not lie on that object?",
    "Which of {p} and {q} is not on the same object as the point {a}?",
    "Take the point {a} and the object under it. Does {p} or {q} fall outside that object?",
    "Coordinates are normalised (x, y). Which point, {p} or {q}, is off the object that {a} falls on?",
    "Of the two points {p} and {q}, which one marks something other than the object at {a}?",
)


class _PointObject(_Spatial):
    """ProVision's point-instance questions (arXiv 2412.07012): which of two points lies (or
    does not lie) on the object under an anchor point. Needs instance masks."""

    skills = ("grounding", "referencing")
    near_q, far_q = _SAME, _DIFFERENT  # "closer" here: on the same object

    def facts(self, graphs, ctx):
        g = graphs[0]
        return g if g.masks and g.objects else None

    def candidates(self, g, ctx):
        return list(range(len(g.objects)))

    def pool(self, g, ctx):
        return RarePool(self.candidates(g, ctx), _label_counts(g, ctx))

    def word(self, g, i, rng, ctx):
        pts = _points(g)
        a = pts.sample_in(rng, i)
        b = pts.sample_in(rng, i, avoid=[a]) if a else None
        if b is None:
            return None
        others = [j for j in range(len(g.objects)) if j != i]
        rng.shuffle(others)
        c, who = None, -1
        for j in others[:6]:
            c = pts.sample_in(rng, j, avoid=[a, b])
            if c is not None:
                who = j
                break
        if c is None:
            c = pts.sample_background(rng)
            if c is None or c in (a, b):
                return None
        same, other = _fmt_point(*b), _fmt_point(*c)
        p, q = (same, other) if rng.random() < 0.5 else (other, same)
        labels = [g.objects[i].label] + ([g.objects[who].label] if who >= 0 else [])
        return self.binary(rng, ctx, same, other, labels, {
            "anchor_point": [a[0] / 100, a[1] / 100], "same_point": [b[0] / 100, b[1] / 100],
            "other_point": [c[0] / 100, c[1] / 100], "object": i, "object_label": g.objects[i].label,
            "other_object": who if who >= 0 else None,
            "other_label": g.objects[who].label if who >= 0 else None,
        }, a=_fmt_point(*a), p=p, q=q)


@register
class PointSameObject(_PointObject):
    """Which of two points lies on the same object as the anchor point (ProVision, arXiv 2412.07012)."""

    name = "point_same_object"
    closer = True


@register
class PointDifferentObject(_PointObject):
    """Which of two points does not lie on the object under the anchor point (ProVision, arXiv 2412.07012)."""

    name = "point_different_object"
    closer = False


# -- 16-17: which of two points is closer / farther --------------------------------------
_POINT_NEAR = (
    "Which point is nearer to the camera: {p} or {q}?",
    "Of the two image points {p} and {q}, which one shows something closer to the viewer?",
    "Judging the depth of the scene, is {p} or {q} closer to the camera?",
    "Points are normalised (x, y). Between {p} and {q}, which lies closer to the camera?",
)
_POINT_FAR = (
    "Which point is farther from the camera: {p} or {q}?",
    "Of the two image points {p} and {q}, which one shows something more distant from the viewer?",
    "Judging the depth of the scene, is {p} or {q} farther from the camera?",
    "Points are normalised (x, y). Between {p} and {q}, which lies farther away from the camera?",
)


class _RandomPointPairs:
    """The candidates of the point-depth questions: random pairs of grid points, drawn until
    `_PAIR_TRIES` draws have missed (a point used before, or no depth gap between them)."""

    def __init__(self, pts: _Points, gap: int):
        self.pts, self.gap = pts, gap
        self.seen: list[tuple[int, int]] = []
        self.misses = 0

    def __bool__(self) -> bool:
        return self.misses < _PAIR_TRIES

    def take(self, rng: random.Random):
        """(a, b, their depth spans, the closer point, the farther one), or None for a miss."""
        draw = rng.random
        a = (int(draw() * 100), int(draw() * 100))
        b = (int(draw() * 100), int(draw() * 100))
        if a == b or a in self.seen or b in self.seen:
            self.misses += 1
            return None
        (alo, ahi), (blo, bhi) = spans = self.pts.depth_span(*a), self.pts.depth_span(*b)
        if alo - bhi >= self.gap:
            near, far = a, b  # higher depth value = closer
        elif blo - ahi >= self.gap:
            near, far = b, a
        else:
            self.misses += 1
            return None
        self.seen += [a, b]
        return a, b, spans, near, far


class _PointDepth(_Spatial):
    """ProVision's point-depth questions (arXiv 2412.07012), with the direction right:
    higher depth values are closer. Needs a depth map."""

    near_q, far_q = _POINT_NEAR, _POINT_FAR

    def facts(self, graphs, ctx):
        g = graphs[0]
        return g if g.depth is not None else None

    def pool(self, g, ctx):
        return _RandomPointPairs(_points(g), ctx.depth_gap)

    def word(self, g, drawn, rng, ctx):
        a, b, spans, near, far = drawn
        pts = _points(g)
        under = [pts.object_at(*pts.pixel(*k)) for k in (a, b)]  # None without masks
        labels = [g.objects[i].label for i in under if i is not None and i >= 0]
        return self.binary(rng, ctx, _fmt_point(*near), _fmt_point(*far), list(dict.fromkeys(labels)), {
            "points": [[a[0] / 100, a[1] / 100], [b[0] / 100, b[1] / 100]],
            "objects_at_points": under,
            "depth_ranges": [list(spans[0]), list(spans[1])], "depth_gap": ctx.depth_gap,
            "closer_point": [near[0] / 100, near[1] / 100],
        }, p=_fmt_point(*a), q=_fmt_point(*b))


@register
class CloserPoint(_PointDepth):
    """Which of two points is closer to the camera (ProVision, arXiv 2412.07012)."""

    name = "closer_point"
    closer = True


@register
class FartherPoint(_PointDepth):
    """Which of two points is farther from the camera (ProVision, arXiv 2412.07012)."""

    name = "farther_point"
    closer = False


# -- 18-19: which of two objects is closer / farther -------------------------------------
_OBJ_NEAR = (
    "Which is closer to the camera, the {a} or the {b}?",
    "Of the {a} and the {b}, which one is nearer to the viewer?",
    "Is the {a} or the {b} closer to the camera?",
    "Comparing how far they are from the camera, which is nearer: the {a} or the {b}?",
)
_OBJ_FAR = (
    "Which is farther from the camera, the {a} or the {b}?",
    "Of the {a} and the {b}, which one is more distant from the viewer?",
    "Is the {a} or the {b} farther away from the camera?",
    "Comparing how far they are from the camera, which is more distant: the {a} or the {b}?",
)


def _usable_depths(g: SceneGraph) -> list[int | None]:
    if g.depth is None or not g.objects:
        return []
    return g.object_depths


class _DepthPairs(_Spatial):
    """Questions about two objects told apart by depth (object depth: the most frequent depth
    value inside its mask); pairs of rare labels are drawn first."""

    min_objects = 1

    def facts(self, graphs, ctx):
        g = graphs[0]
        depths = _usable_depths(g)
        if not depths or sum(d is not None for d in depths) < self.min_objects:
            return None
        return _Scene(g, ctx, depths)

    def rarity(self, s, pair, ctx):
        return min(s.cnt[pair[0]], s.cnt[pair[1]])

    def ordered(self, s: _Scene, i: int, j: int, rng: random.Random, anchor: int | None = None):
        """(closer, farther) of i and j (to the camera, or in depth to the anchor), and the
        pair in the order the question names them."""
        if anchor is None:
            near, far = (i, j) if s.depths[i] > s.depths[j] else (j, i)  # higher value = closer
        else:
            d = s.depths[anchor]
            near, far = (i, j) if abs(s.depths[i] - d) < abs(s.depths[j] - d) else (j, i)
        first, second = (i, j) if rng.random() < 0.5 else (j, i)
        return near, far, first, second


class _ObjectDepth(_DepthPairs):
    """ProVision's object-depth questions (arXiv 2412.07012): which of two objects is closer
    to (farther from) the camera; pairs whose depths are closer than the gap are skipped."""

    near_q, far_q = _OBJ_NEAR, _OBJ_FAR

    def candidates(self, s, ctx):
        return s.pts.depth_pairs(s.depths, s.gap)

    def word(self, s, pair, rng, ctx):
        near, far, first, second = self.ordered(s, *pair, rng)
        g, names = s.g, s.names
        return self.binary(rng, ctx, names[near], names[far], [g.objects[first].label, g.objects[second].label], {
            "objects": [first, second], "boxes": [g.norm_box(first), g.norm_box(second)],
            "depths": [s.depths[first], s.depths[second]], "depth_gap": s.gap, "closer_object": near,
        }, a=names[first], b=names[second])


@register
class CloserObject(_ObjectDepth):
    """Which of two objects is closer to the camera (ProVision, arXiv 2412.07012)."""

    name = "closer_object"
    closer = True


@register
class FartherObject(_ObjectDepth):
    """Which of two objects is farther from the camera (ProVision, arXiv 2412.07012)."""

    name = "farther_object"
    closer = False


# -- 20-21: which of two objects is closer / farther in depth to an anchor ----------------
_ANCHOR_NEAR = (
    "In terms of depth, which is closer to the {c}: the {a} or the {b}?",
    "Which object sits at a distance from the camera more like that of the {c}, the {a} or the {b}?",
    "Looking only along the camera's line of sight, is the {a} or the {b} nearer to the {c}?",
    "Ignoring left-right and up-down position, which is closer in depth to the {c}: the {a} or the {b}?",
)
_ANCHOR_FAR = (
    "In terms of depth, which is farther from the {c}: the {a} or the {b}?",
    "Which object's distance from the camera differs more from that of the {c}, the {a} or the {b}?",
    "Looking only along the camera's line of sight, is the {a} or the {b} farther from the {c}?",
    "Ignoring left-right and up-down position, which is farther in depth from the {c}: the {a} or the {b}?",
)


class _AnchorPairs:
    """The candidates of the anchor questions, drawn in two steps: an anchor (rare labels
    first), then one of its pairs; an anchor without pairs is dropped (that draw gives None).
    An anchor's pairs are listed only once it is drawn."""

    def __init__(self, s: _Scene, anchors: list[int], rarity):
        self.s, self.rarity = s, rarity
        self.anchors = RarePool(anchors, [s.cnt[i] for i in anchors])
        self.pairs_of: dict[int, RarePool] = {}

    def __bool__(self) -> bool:
        return bool(self.anchors)

    def take(self, rng: random.Random):
        k = self.anchors.draw(rng)
        c = self.anchors.items[k]
        if c not in self.pairs_of:
            found = self.s.pts.anchor_pairs(c, self.s.depths, self.s.gap)
            self.pairs_of[c] = RarePool(found, [self.rarity(self.s, p, None) for p in found])
        pairs = self.pairs_of[c]
        if not pairs:
            self.anchors.pop(k)
            return None
        return (c, *pairs.take(rng))


class _AnchorDepth(_DepthPairs):
    """ProVision's relative-depth questions (arXiv 2412.07012): which of two objects is
    closer to (farther from) an anchor object along the camera's line of sight."""

    min_objects = 3
    near_q, far_q = _ANCHOR_NEAR, _ANCHOR_FAR

    def pool(self, s, ctx):
        return _AnchorPairs(s, [i for i, d in enumerate(s.depths) if d is not None], self.rarity)

    def word(self, s, drawn, rng, ctx):
        c, i, j = drawn
        near, far, first, second = self.ordered(s, i, j, rng, anchor=c)
        g, names, depths = s.g, s.names, s.depths
        return self.binary(
            rng, ctx, names[near], names[far],
            [g.objects[c].label, g.objects[first].label, g.objects[second].label],
            {"anchor": c, "objects": [first, second], "anchor_depth": depths[c],
             "depths": [depths[first], depths[second]], "depth_gap": s.gap, "closer_to_anchor": near},
            a=names[first], b=names[second], c=names[c])


@register
class CloserToAnchor(_AnchorDepth):
    """Which of two objects is closer in depth to the anchor object (ProVision, arXiv 2412.07012)."""

    name = "closer_to_anchor"
    closer = True


@register
class FartherToAnchor(_AnchorDepth):
    """Which of two objects is farther in depth from the anchor object (ProVision, arXiv 2412.07012)."""

    name = "farther_to_anchor"
    closer = False
