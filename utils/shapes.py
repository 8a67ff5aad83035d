"""The synthetic world's vocabulary: what an object of the embedded default data set can be.

A class is one (shape, texture, part) combination (12 x 7 x 6 = 504, `CLASS_COMBOS`). Everything here is drawn
in object-local coordinates as signed distances (negative inside), vectorised over (n, H, W) numpy arrays, so
that a texture or a part moves, scales and rotates with its object. utils/synthetic.py places the objects,
colours and lights them, adds clutter and noise, and writes the course-format files.

Tests: tests/test_synthetic.py.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np

IMAGE_SIZE = 64                      # the course's images are 64x64


# ---- Pixel grid and object-local coordinates
# Image coordinates span [-1, 1] in both directions (y up), so one unit is 32 pixels.

PIXELS_PER_UNIT = IMAGE_SIZE / 2
# Pixel centres in image units, left to right (x) or top to bottom (-y).
PIXEL_CENTRES = ((np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5) / PIXELS_PER_UNIT - 1.0).astype(np.float32)
GRID_X = PIXEL_CENTRES[None, None, :]             # (1, 1, W)
GRID_Y = -PIXEL_CENTRES[None, :, None]            # (1, H, 1), row 0 at the top


def local_coords(cx, cy, angle, scale, grid_x=GRID_X, grid_y=GRID_Y):
    """Object-local coordinates of every pixel for n objects.

    cx, cy, angle, scale: (n,) centre (image units), rotation (radians), size (image units per local unit).
    grid_x (1 or n, 1, W), grid_y (1 or n, H, 1): pixel centres in image units (default: the whole image).
    Returns u, v: float32 (n, H, W); the object's own frame, in which shapes are drawn with radius about 1."""
    dx = grid_x - cx[:, None, None]
    dy = grid_y - cy[:, None, None]
    cos = (np.cos(angle) / scale)[:, None, None].astype(np.float32)
    sin = (np.sin(angle) / scale)[:, None, None].astype(np.float32)
    return cos * dx + sin * dy, cos * dy - sin * dx


def soft_mask(distance, scale, softness_px=0.6):
    """Anti-aliased coverage in [0, 1] from a signed distance (negative inside), (n, H, W) -> (n, 1, H, W).

    `distance` is in local units; times scale * PIXELS_PER_UNIT it is in pixels, so every edge has the same
    softness on screen whatever the object's size."""
    px = distance * (scale * (PIXELS_PER_UNIT / softness_px)).astype(np.float32)[:, None, None]
    return (0.5 - 0.5 * np.tanh(0.5 * px))[:, None]      # = sigmoid(-px), without overflow warnings


# ---- Signed distances of primitives (negative inside), vectorised over (n, H, W) coordinate arrays

def length(u, v):
    """sqrt(u^2 + v^2): numpy's hypot is several times slower and its overflow care is not needed here."""
    return np.sqrt(u * u + v * v)


def sd_circle(u, v, radius, cu=0.0, cv=0.0):
    return length(u - cu, v - cv) - radius


def sd_box(u, v, half_u, half_v, cu=0.0, cv=0.0):
    qu = np.abs(u - cu) - half_u
    qv = np.abs(v - cv) - half_v
    outside = length(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0)


def sd_convex_polygon(u, v, vertices):
    """Max over edges of the distance to the edge's line: exact inside, a slight underestimate near corners.

    vertices: counter-clockwise (k, 2) sequence of (u, v)."""
    vertices = np.asarray(vertices, dtype=np.float32)
    distances = []
    for (au, av), (bu, bv) in zip(vertices, np.roll(vertices, -1, axis=0)):
        nu, nv = bv - av, au - bu                          # outward normal of a counter-clockwise edge
        norm = np.hypot(nu, nv)
        distances.append((u - au) * (nu / norm) + (v - av) * (nv / norm))
    return functools.reduce(np.maximum, distances)


def union(distances):
    """The signed distance of the union of several shapes: the minimum of theirs."""
    return functools.reduce(np.minimum, distances)


def regular_polygon(sides, radius, rotation=np.pi / 2):
    """(sides, 2) vertices of a regular polygon, counter-clockwise, first vertex at `rotation`."""
    angles = rotation + 2 * np.pi * np.arange(sides) / sides
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


# ---- Shapes: what the object is, in local units (radius about 0.9)

def shape_star(u, v):
    """Five-pointed star: radial distance to a boundary that zig-zags between an inner and outer radius."""
    turns = np.arctan2(u, v) * (5 / (2 * np.pi))                     # five tips per turn
    zigzag = np.abs(turns - np.floor(turns) - 0.5) * 2               # 1 at tips, 0 between
    boundary = 0.42 + (1.0 - 0.42) * zigzag
    return (length(u, v) - boundary) * 0.55  # the slope of a radial distance to a zig-zag edge is about 1/0.55


def shape_heart(u, v):
    """A square turned 45 degrees (the point) with two discs on its upper edges (the lobes)."""
    half, centre_v = 0.52, -0.12
    root2 = 2 ** 0.5                      # a Python float: numpy float64 scalars would upcast float32 arrays
    diag = half * root2
    point = sd_box((u + (v - centre_v)) / root2, ((v - centre_v) - u) / root2, half, half)
    left = sd_circle(u, v, half, -diag / 2, centre_v + diag / 2)
    right = sd_circle(u, v, half, diag / 2, centre_v + diag / 2)
    return np.minimum(point, np.minimum(left, right))


SHAPES = {
    "circle": lambda u, v: sd_circle(u, v, 0.85),
    "square": lambda u, v: sd_box(u, v, 0.72, 0.72),
    "triangle": lambda u, v: sd_convex_polygon(u, v, regular_polygon(3, 1.05)),
    "hexagon": lambda u, v: sd_convex_polygon(u, v, regular_polygon(6, 0.9, rotation=0.0)),
    "diamond": lambda u, v: sd_convex_polygon(u, v, [(0.0, -0.98), (0.58, 0.0), (0.0, 0.98), (-0.58, 0.0)]),
    "star": shape_star,
    "cross": lambda u, v: np.minimum(sd_box(u, v, 0.88, 0.28), sd_box(u, v, 0.28, 0.88)),
    "ring": lambda u, v: np.abs(length(u, v) - 0.66) - 0.3,
    "heart": shape_heart,
    "crescent": lambda u, v: np.maximum(sd_circle(u, v, 0.9), -sd_circle(u, v, 0.72, 0.42, 0.12)),
    "arrow": lambda u, v: np.minimum(sd_box(u, v, 0.5, 0.17, cu=-0.4),
                                     sd_convex_polygon(u, v, [(0.05, -0.62), (0.95, 0.0), (0.05, 0.62)])),
    "half-disc": lambda u, v: np.maximum(sd_circle(u, v, 1.0, 0.0, -0.4), -(v + 0.4)),
}


# ---- Textures: where the object shows its second tone, t in [0, 1] (None: one tone only)
# Periods are in local units (about 0.38 = 5 to 8 pixels at the sizes drawn): visible at 64x64, yet fine.

_PERIOD = 0.38


def _soft(x, gain=3.0):
    """Cheap soft threshold of a wave around 0 -> [0, 1] (the texture's own anti-aliasing)."""
    return np.clip(0.5 + gain * x, 0.0, 1.0)


def texture_checker(u, v):
    k = 2 * np.pi / (1.6 * _PERIOD)
    return _soft(np.sin(u * k) * np.sin(v * k), gain=4.0)


def texture_dots(u, v):
    cell = 1.05 * _PERIOD
    return _soft(0.3 - length(u / cell - np.round(u / cell), v / cell - np.round(v / cell)), gain=8.0)


def texture_grid(u, v):
    cell = 1.2 * _PERIOD
    du = np.abs(u / cell - np.round(u / cell))
    dv = np.abs(v / cell - np.round(v / cell))
    return _soft(0.12 - np.minimum(du, dv), gain=10.0)


TEXTURES = {
    "solid": lambda u, v: None,
    "striped": lambda u, v: _soft(np.sin(u * (2 * np.pi / _PERIOD))),
    "checkered": texture_checker,
    "dotted": texture_dots,
    "ringed": lambda u, v: _soft(np.sin(length(u, v) * (2 * np.pi / _PERIOD))),
    "wavy": lambda u, v: _soft(np.sin((v + 0.14 * np.sin(u * (2 * np.pi / 0.75))) * (2 * np.pi / _PERIOD))),
    "grid-patterned": texture_grid,
}


# ---- Parts: what the object has. "Behind" parts are drawn under the body, "front" ones over it.

PARTS = {
    "none": None,
    "eyes": lambda u, v, body: np.minimum(sd_circle(u, v, 0.15, -0.3, 0.22), sd_circle(u, v, 0.15, 0.3, 0.22)),
    "stem": lambda u, v, body: sd_box(u, v, 0.09, 0.32, cv=-1.05),
    "satellites": lambda u, v, body: union(sd_circle(u, v, 0.14, float(1.22 * np.cos(a)), float(1.22 * np.sin(a)))
                                           for a in (np.pi / 4, 3 * np.pi / 4, 5 * np.pi / 4, 7 * np.pi / 4)),
    "crown": lambda u, v, body: union(sd_convex_polygon(u, v, [(cu - 0.17, 0.6), (cu + 0.17, 0.6), (cu, 1.35)])
                                      for cu in (-0.42, 0.0, 0.42)),
    "outline": lambda u, v, body: np.abs(body) - 0.075,
}
PARTS_BEHIND = {"stem", "satellites", "crown"}

_PART_PHRASES = {"none": "", "eyes": " with eyes", "stem": " with a stem", "satellites": " with satellites",
                 "crown": " with a crown", "outline": " with an outline"}

# Every (shape, texture, part) combination, in a fixed order: the world the classes are drawn from.
CLASS_COMBOS: list[tuple[str, str, str]] = list(itertools.product(SHAPES, TEXTURES, PARTS))


def class_name(combo: tuple[str, str, str]) -> str:
    """'striped star with eyes' for ('star', 'striped', 'eyes')."""
    shape, texture, part = combo
    return f"{texture} {shape}{_PART_PHRASES[part]}"
