"""The synthetic world's vocabulary: what an object of the embedded default data set can be.

A class is one (shape, texture, part) combination (12 x 7 x 6 = 504, `CLASS_COMBOS`). Everything here is drawn
in object-local coordinates as signed distances (negative inside), vectorised over (n, H, W) numpy arrays, so
that a texture or a part moves, scales and rotates with its object. utils/synthetic.py places the objects,
colours and lights them, adds clutter and noise, and writes the course-format files.
"""
from __future__ import annotations

import itertools

import numpy as np

IMAGE_SIZE = 64                      # the course's images are 64x64


# ----------------------------------------------------------------------------------------------------------
# Pixel grid and object-local coordinates
# ----------------------------------------------------------------------------------------------------------
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
    Returns u, v: float32 (n, H, W); the object's own frame, in which shapes are drawn with radius about 1.
    """
    dx = grid_x - cx[:, None, None]
    dy = grid_y - cy[:, None, None]
    cos = (np.cos(angle) / scale)[:, None, None].astype(np.float32)
    sin = (np.sin(angle) / scale)[:, None, None].astype(np.float32)
    return cos * dx + sin * dy, cos * dy - sin * dx


def soft_mask(distance, scale, softness_px=0.6):
    """Anti-aliased coverage in [0, 1] from a signed distance (negative inside), (n, H, W) -> (n, 1, H, W).

    `distance` is in local units; times scale * PIXELS_PER_UNIT it is in pixels, so every edge has the same
    softness on screen whatever the object's size.
    """
    px = distance * (scale * (PIXELS_PER_UNIT / softness_px)).astype(np.float32)[:, None, None]
    return (0.5 - 0.5 * np.tanh(0.5 * px))[:, None]      # = sigmoid(-px), without overflow warnings


# ----------------------------------------------------------------------------------------------------------
# Signed distances of primitives (negative inside), vectorised over (n, H, W) coordinate arrays
# ----------------------------------------------------------------------------------------------------------

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

    vertices: counter-clockwise (k, 2) sequence of (u, v).
    """
    vertices = np.asarray(vertices, dtype=np.float32)
    result = None
    for (au, av), (bu, bv) in zip(vertices, np.roll(vertices, -1, axis=0)):
        nu, nv = bv - av, au - bu                          # outward normal of a counter-clockwise edge
        norm = np.hypot(nu, nv)
        d = ((u - au) * (nu / norm) + (v - av) * (nv / norm))
        result = d if result is None else np.maximum(result, d)
    return result


def regular_polygon(sides, radius, rotation=np.pi / 2):
    """(sides, 2) vertices of a regular polygon, counter-clockwise, first vertex at `rotation`."""
    angles = rotation + 2 * np.pi * np.arange(sides) / sides
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


# ----------------------------------------------------------------------------------------------------------
# Shapes: what the object is, in local units (radius about 0.9)
# ----------------------------------------------------------------------------------------------------------

def shape_circle(u, v):
    return sd_circle(u, v, 0.85)


def shape_square(u, v):
    return sd_box(u, v, 0.72, 0.72)


def shape_triangle(u, v):
    return sd_convex_polygon(u, v, regular_polygon(3, 1.05))


def shape_hexagon(u, v):
    return sd_convex_polygon(u, v, regular_polygon(6, 0.9, rotation=0.0))


def shape_diamond(u, v):
    return sd_convex_polygon(u, v, [(0.0, -0.98), (0.58, 0.0), (0.0, 0.98), (-0.58, 0.0)])


def shape_star(u, v):
    """Five-pointed star: radial distance to a boundary that zig-zags between an inner and outer radius."""
    radius = length(u, v)
    turns = np.arctan2(u, v) * (5 / (2 * np.pi))                     # five tips per turn
    phase = turns - np.floor(turns)                                  # 0 at a tip, 0.5 between tips
    zigzag = np.abs(phase - 0.5) * 2                                     # 1 at tips, 0 between
    boundary = 0.42 + (1.0 - 0.42) * zigzag
    return (radius - boundary) * 0.55        # the slope of a radial distance to a zig-zag edge is about 1/0.55


def shape_cross(u, v):
    return np.minimum(sd_box(u, v, 0.88, 0.28), sd_box(u, v, 0.28, 0.88))


def shape_ring(u, v):
    return np.abs(length(u, v) - 0.66) - 0.3


def shape_heart(u, v):
    """A square turned 45 degrees (the point) with two discs on its upper edges (the lobes)."""
    half = 0.52
    centre_v = -0.12
    root2 = 2 ** 0.5                      # a Python float: numpy float64 scalars would upcast float32 arrays
    diag = half * root2
    ru, rv = (u + (v - centre_v)) / root2, ((v - centre_v) - u) / root2
    point = sd_box(ru, rv, half, half)
    left = sd_circle(u, v, half, -diag / 2, centre_v + diag / 2)
    right = sd_circle(u, v, half, diag / 2, centre_v + diag / 2)
    return np.minimum(point, np.minimum(left, right))


def shape_crescent(u, v):
    return np.maximum(sd_circle(u, v, 0.9), -sd_circle(u, v, 0.72, 0.42, 0.12))


def shape_arrow(u, v):
    shaft = sd_box(u, v, 0.5, 0.17, cu=-0.4)
    head = sd_convex_polygon(u, v, [(0.05, -0.62), (0.95, 0.0), (0.05, 0.62)])
    return np.minimum(shaft, head)


def shape_half_disc(u, v):
    return np.maximum(sd_circle(u, v, 1.0, 0.0, -0.4), -(v + 0.4))


SHAPES = {
    "circle": shape_circle, "square": shape_square, "triangle": shape_triangle, "hexagon": shape_hexagon,
    "diamond": shape_diamond, "star": shape_star, "cross": shape_cross, "ring": shape_ring,
    "heart": shape_heart, "crescent": shape_crescent, "arrow": shape_arrow, "half-disc": shape_half_disc,
}


# ----------------------------------------------------------------------------------------------------------
# Textures: where the object shows its second tone, t in [0, 1], in local coordinates
# ----------------------------------------------------------------------------------------------------------
# Periods are in local units (about 0.38 = 5 to 8 pixels at the sizes drawn): visible at 64x64, yet fine.

_PERIOD = 0.38


def _soft(x, gain=3.0):
    """Cheap soft threshold of a wave around 0 -> [0, 1] (the texture's own anti-aliasing)."""
    return np.clip(0.5 + gain * x, 0.0, 1.0)


def texture_solid(u, v):
    return None                                      # one tone only


def texture_stripes(u, v):
    return _soft(np.sin(u * (2 * np.pi / _PERIOD)))


def texture_checker(u, v):
    k = 2 * np.pi / (1.6 * _PERIOD)
    return _soft(np.sin(u * k) * np.sin(v * k), gain=4.0)


def texture_dots(u, v):
    cell = 1.05 * _PERIOD
    du = u / cell - np.round(u / cell)
    dv = v / cell - np.round(v / cell)
    return _soft(0.3 - length(du, dv), gain=8.0)


def texture_rings(u, v):
    return _soft(np.sin(length(u, v) * (2 * np.pi / _PERIOD)))


def texture_waves(u, v):
    return _soft(np.sin((v + 0.14 * np.sin(u * (2 * np.pi / 0.75))) * (2 * np.pi / _PERIOD)))


def texture_grid(u, v):
    cell = 1.2 * _PERIOD
    du = np.abs(u / cell - np.round(u / cell))
    dv = np.abs(v / cell - np.round(v / cell))
    return _soft(0.12 - np.minimum(du, dv), gain=10.0)


TEXTURES = {
    "solid": texture_solid, "striped": texture_stripes, "checkered": texture_checker, "dotted": texture_dots,
    "ringed": texture_rings, "wavy": texture_waves, "grid-patterned": texture_grid,
}


# ----------------------------------------------------------------------------------------------------------
# Parts: what the object has, in local coordinates. "Behind" parts are drawn under the body, "front" over it.
# ----------------------------------------------------------------------------------------------------------

def part_eyes(u, v, body):
    return np.minimum(sd_circle(u, v, 0.15, -0.3, 0.22), sd_circle(u, v, 0.15, 0.3, 0.22))


def part_stem(u, v, body):
    return sd_box(u, v, 0.09, 0.32, cv=-1.05)


def part_satellites(u, v, body):
    d = None
    for angle in (np.pi / 4, 3 * np.pi / 4, 5 * np.pi / 4, 7 * np.pi / 4):
        s = sd_circle(u, v, 0.14, float(1.22 * np.cos(angle)), float(1.22 * np.sin(angle)))
        d = s if d is None else np.minimum(d, s)
    return d


def part_crown(u, v, body):
    d = None
    for cu in (-0.42, 0.0, 0.42):
        s = sd_convex_polygon(u, v, [(cu - 0.17, 0.6), (cu + 0.17, 0.6), (cu, 1.35)])
        d = s if d is None else np.minimum(d, s)
    return d


def part_outline(u, v, body):
    return np.abs(body) - 0.075


PARTS = {"none": None, "eyes": part_eyes, "stem": part_stem, "satellites": part_satellites,
         "crown": part_crown, "outline": part_outline}
PARTS_BEHIND = {"stem", "satellites", "crown"}

_PART_PHRASES = {"none": "", "eyes": " with eyes", "stem": " with a stem", "satellites": " with satellites",
                 "crown": " with a crown", "outline": " with an outline"}

# Every (shape, texture, part) combination, in a fixed order: the world the classes are drawn from.
CLASS_COMBOS: list[tuple[str, str, str]] = list(itertools.product(SHAPES, TEXTURES, PARTS))


def class_name(combo: tuple[str, str, str]) -> str:
    """'striped star with eyes' for ('star', 'striped', 'eyes')."""
    shape, texture, part = combo
    return f"{texture} {shape}{_PART_PHRASES[part]}"


