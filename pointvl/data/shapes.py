"""Procedural ShapeNet-like object meshes: one parametric family of primitives per category.

Every family returns a ``PartMesh``: vertices (V, 3), triangles (F, 3) and a part id per
triangle, in ShapeNet's normalized frame after ``normalize``::

          y (up)
          |
          |____ x          the object faces +z ("front"); its own left side is +x
         /
        z (front)

    bounding box centred at the origin, diagonal = 1, so the object lies in [-0.5, 0.5]^3.

Each part is a closed primitive (box, surface of revolution, torus arc with caps) whose
triangles are wound outwards (signed volume > 0). Parts abut or overlap a little, so the
union is not one manifold: Poisson-disk sampling samples every part's surface, and a few
samples lie on faces hidden inside a neighbouring part (a documented departure: ShapeNet
meshes are not watertight either). Same ``rng`` state -> same mesh (numpy only, no global
state).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

CATEGORIES: tuple[str, ...] = (
    "chair",
    "table",
    "lamp",
    "mug",
    "bottle",
    "bench",
    "sofa",
    "bookshelf",
    "airplane",
    "car",
    "bowl",
    "monitor",
    "cabinet",
    "bed",
)

# Categories whose shape is (nearly) rotationally symmetric about y: no front / back side.
SYMMETRIC: frozenset[str] = frozenset({"bottle", "bowl", "lamp"})


@dataclass
class PartMesh:
    """A triangle mesh whose triangles carry a part id; ``part_names[i]`` names part id i."""

    vertices: np.ndarray  # (V, 3) float64
    triangles: np.ndarray  # (F, 3) int64
    part_ids: np.ndarray  # (F,) int64
    part_names: list[str]
    category: str = ""
    attributes: dict = field(default_factory=dict)
    """Family parameters worth asking about: counts of parts, yes/no features."""
    part_counts: list[int] = field(default_factory=list)
    """How many primitives make up part i (e.g. 4 for "leg")."""

    def copy(self) -> PartMesh:
        return PartMesh(
            self.vertices.copy(),
            self.triangles.copy(),
            self.part_ids.copy(),
            list(self.part_names),
            self.category,
            dict(self.attributes),
            list(self.part_counts),
        )


# ----------------------------------------------------------------------------- primitives
def _orient_outwards(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Flip all triangles if the closed surface has negative signed volume."""
    vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0
    return f[:, ::-1].copy() if vol < 0 else f


def box(center, size) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box: 8 vertices, 12 triangles."""
    c, s = np.asarray(center, float), np.asarray(size, float) / 2.0
    corners = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)
    v = c + corners * s
    f = np.array(
        [
            [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],  # x- / x+
            [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],  # y- / y+
            [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],  # z- / z+
        ],
        np.int64,
    )  # fmt: skip
    return v, _orient_outwards(v, f)


def lathe(profile, segments: int = 24, axis: str = "y", center=(0.0, 0.0, 0.0)):
    """Surface of revolution of a closed profile [(r, h), ...] about ``axis``.

    The profile runs from a point on the axis (r = 0) to another point on the axis; the
    end points become the two poles, so the surface is closed.
    """
    prof = np.asarray(profile, float)
    if prof[0, 0] != 0 or prof[-1, 0] != 0:
        raise ValueError("lathe: the profile must start and end on the axis (r = 0)")
    inner = prof[1:-1]  # (P, 2) ring profile
    p = len(inner)
    ang = np.linspace(0.0, 2 * math.pi, segments, endpoint=False)
    ring = np.stack(
        [np.outer(inner[:, 0], np.cos(ang)), np.outer(inner[:, 0], np.sin(ang))], -1
    )  # (P, S, 2)
    h = np.broadcast_to(inner[:, 1:2], (p, segments))
    local = np.stack([ring[..., 0], h, ring[..., 1]], -1).reshape(-1, 3)  # (P*S, 3) about y
    v = np.concatenate([[[0, prof[0, 1], 0]], local, [[0, prof[-1, 1], 0]]])
    bottom, top = 0, len(v) - 1

    def idx(i, j):
        return 1 + i * segments + (j % segments)

    faces = []
    for j in range(segments):
        faces.append([bottom, idx(0, j + 1), idx(0, j)])
        faces.append([top, idx(p - 1, j), idx(p - 1, j + 1)])
    for i in range(p - 1):
        for j in range(segments):
            a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
            faces += [[a, b, d], [a, d, c]]
    f = np.asarray(faces, np.int64)
    v = _axis_from_y(v, axis) + np.asarray(center, float)
    return v, _orient_outwards(v, f)


def _axis_from_y(v: np.ndarray, axis: str) -> np.ndarray:
    if axis == "y":
        return v
    if axis == "x":
        return v[:, [1, 0, 2]]
    if axis == "z":
        return v[:, [0, 2, 1]]
    raise ValueError(f"axis={axis!r}: expected 'x', 'y' or 'z'")


def cylinder(center, radius: float, height: float, axis: str = "y", segments: int = 20):
    h = height / 2.0
    return lathe([(0, -h), (radius, -h), (radius, h), (0, h)], segments, axis, center)


def frustum(center, r_bottom: float, r_top: float, height: float, segments: int = 24):
    h = height / 2.0
    return lathe([(0, -h), (r_bottom, -h), (r_top, h), (0, h)], segments, "y", center)


def ellipsoid(center, radii, segments: int = 20, rings: int = 10):
    t = np.linspace(-math.pi / 2, math.pi / 2, rings + 1)
    v, f = lathe(np.stack([np.cos(t), np.sin(t)], 1).round(12), segments, "y")
    v = v * np.asarray(radii, float) + np.asarray(center, float)
    return v, _orient_outwards(v, f)


def torus_arc(center, major: float, minor: float, a0: float, a1: float, n_arc=12, n_tube=10):
    """Arc of a torus in the x-y plane (angles a0..a1 about +z), closed by two flat caps."""
    arc = np.linspace(a0, a1, n_arc + 1)
    tube = np.linspace(0, 2 * math.pi, n_tube, endpoint=False)
    cu, su = np.cos(arc)[:, None], np.sin(arc)[:, None]
    cv, sv = np.cos(tube)[None, :], np.sin(tube)[None, :]
    x = (major + minor * cv) * cu
    y = (major + minor * cv) * su
    z = minor * sv * np.ones_like(cu)
    v = np.stack([x, y, z], -1).reshape(-1, 3)
    caps = np.array([[major * math.cos(a0), major * math.sin(a0), 0.0],
                     [major * math.cos(a1), major * math.sin(a1), 0.0]])  # fmt: skip
    v = np.concatenate([v, caps])
    c0, c1 = len(v) - 2, len(v) - 1
    faces = []
    for i in range(n_arc):
        for j in range(n_tube):
            a, b = i * n_tube + j, i * n_tube + (j + 1) % n_tube
            c, d = a + n_tube, b + n_tube
            faces += [[a, b, d], [a, d, c]]
    for j in range(n_tube):
        faces.append([c0, (j + 1) % n_tube, j])
        faces.append([c1, n_arc * n_tube + j, n_arc * n_tube + (j + 1) % n_tube])
    f = np.asarray(faces, np.int64)
    v = v + np.asarray(center, float)
    return v, _orient_outwards(v, f)


class _Builder:
    """Collects named parts into one PartMesh."""

    def __init__(self, category: str):
        self.category = category
        self.vs: list[np.ndarray] = []
        self.fs: list[np.ndarray] = []
        self.ids: list[np.ndarray] = []
        self.names: list[str] = []
        self.counts: list[int] = []
        self.attributes: dict = {}

    def add(self, name: str, prim: tuple[np.ndarray, np.ndarray]) -> None:
        v, f = prim
        offset = sum(len(x) for x in self.vs)
        if name not in self.names:
            self.names.append(name)
            self.counts.append(0)
        self.counts[self.names.index(name)] += 1
        self.vs.append(v)
        self.fs.append(f + offset)
        self.ids.append(np.full(len(f), self.names.index(name), np.int64))

    def build(self) -> PartMesh:
        return PartMesh(
            np.concatenate(self.vs),
            np.concatenate(self.fs),
            np.concatenate(self.ids),
            self.names,
            self.category,
            self.attributes,
            self.counts,
        )


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


# ----------------------------------------------------------------------------- families
def _legs(b: _Builder, rng, w, d, leg_h, top_y, thick, round_legs, inset=0.0, name="leg"):
    for sx in (-1, 1):
        for sz in (-1, 1):
            cx, cz = sx * (w / 2 - thick / 2 - inset), sz * (d / 2 - thick / 2 - inset)
            c = (cx, top_y - leg_h / 2, cz)
            if round_legs:
                b.add(name, cylinder(c, thick / 2, leg_h, segments=12))
            else:
                b.add(name, box(c, (thick, leg_h, thick)))


def chair(rng: np.random.Generator) -> PartMesh:
    b = _Builder("chair")
    w, d = _u(rng, 0.4, 0.6), _u(rng, 0.4, 0.6)
    leg_h, seat_t = _u(rng, 0.35, 0.5), _u(rng, 0.04, 0.08)
    back_h, thick = _u(rng, 0.3, 0.6), _u(rng, 0.03, 0.06)
    round_legs, arms = bool(rng.random() < 0.4), bool(rng.random() < 0.35)
    b.add("seat", box((0, leg_h + seat_t / 2, 0), (w, seat_t, d)))
    _legs(b, rng, w, d, leg_h, leg_h, thick, round_legs)
    back_t = _u(rng, 0.03, 0.06)
    b.add(
        "backrest", box((0, leg_h + seat_t + back_h / 2, -d / 2 + back_t / 2), (w, back_h, back_t))
    )
    if arms:
        arm_h = _u(rng, 0.15, 0.25)
        for sx in (-1, 1):
            b.add(
                "armrest",
                box((sx * (w / 2 - 0.02), leg_h + seat_t + arm_h / 2, 0), (0.04, arm_h, d * 0.9)),
            )
    b.attributes = {"legs": 4, "has_armrests": arms, "round_legs": round_legs}
    return b.build()


def table(rng):
    b = _Builder("table")
    w, d = _u(rng, 0.8, 1.6), _u(rng, 0.5, 1.0)
    h, top_t = _u(rng, 0.5, 0.8), _u(rng, 0.03, 0.07)
    round_top, pedestal = bool(rng.random() < 0.3), bool(rng.random() < 0.25)
    if round_top:
        d = w = _u(rng, 0.6, 1.1)
        b.add("tabletop", cylinder((0, h - top_t / 2, 0), w / 2, top_t, segments=32))
    else:
        b.add("tabletop", box((0, h - top_t / 2, 0), (w, top_t, d)))
    leg_h = h - top_t
    if pedestal:
        b.add("pedestal", cylinder((0, leg_h / 2, 0), _u(rng, 0.03, 0.06), leg_h, segments=16))
        b.add("base", cylinder((0, 0.015, 0), min(w, d) * 0.3, 0.03, segments=24))
        legs = 0
    else:
        inset = 0.1 * min(w, d) if round_top else 0.0
        _legs(b, rng, w * (0.72 if round_top else 1), d * (0.72 if round_top else 1), leg_h, leg_h,
              _u(rng, 0.04, 0.08), bool(rng.random() < 0.5), inset)  # fmt: skip
        legs = 4
    b.attributes = {"legs": legs, "round_top": round_top}
    return b.build()


def lamp(rng):
    b = _Builder("lamp")
    base_r, base_h = _u(rng, 0.1, 0.2), _u(rng, 0.02, 0.05)
    pole_h, pole_r = _u(rng, 0.4, 1.0), _u(rng, 0.01, 0.025)
    shade_h = _u(rng, 0.15, 0.3)
    r_top, r_bot = _u(rng, 0.06, 0.12), _u(rng, 0.12, 0.25)
    b.add("base", cylinder((0, base_h / 2, 0), base_r, base_h, segments=24))
    b.add("pole", cylinder((0, base_h + pole_h / 2, 0), pole_r, pole_h, segments=10))
    b.add("shade", frustum((0, base_h + pole_h + shade_h / 2 - 0.05, 0), r_bot, r_top, shade_h))
    b.attributes = {"has_shade": True, "tall": pole_h > 0.7}
    return b.build()


def mug(rng):
    b = _Builder("mug")
    r, h, wall = _u(rng, 0.3, 0.45), _u(rng, 0.6, 1.0), _u(rng, 0.03, 0.06)
    bot = _u(rng, 0.04, 0.08)
    prof = [(0, 0), (r, 0), (r, h), (r - wall, h), (r - wall, bot), (0, bot)]
    b.add("body", lathe(prof, 28))
    handle = bool(rng.random() < 0.9)
    if handle:
        major, minor = _u(rng, 0.16, 0.26) * h, _u(rng, 0.025, 0.045)
        b.add("handle", torus_arc((r - minor, h / 2, 0), major, minor, -math.pi / 2, math.pi / 2))
    b.attributes = {"has_handle": handle}
    return b.build()


def bottle(rng):
    b = _Builder("bottle")
    r, h = _u(rng, 0.12, 0.22), _u(rng, 0.5, 0.8)
    shoulder, neck_r, neck_h = _u(rng, 0.08, 0.18), _u(rng, 0.03, 0.06), _u(rng, 0.1, 0.2)
    prof = [(0, 0), (r, 0), (r, h), (neck_r, h + shoulder), (neck_r, h + shoulder + neck_h),
            (0, h + shoulder + neck_h)]  # fmt: skip
    b.add("body", lathe(prof, 28))
    cap = bool(rng.random() < 0.7)
    if cap:
        b.add(
            "cap", cylinder((0, h + shoulder + neck_h + 0.02, 0), neck_r * 1.15, 0.05, segments=20)
        )
    b.attributes = {"has_cap": cap}
    return b.build()


def bench(rng):
    b = _Builder("bench")
    w, d, leg_h = _u(rng, 1.2, 2.0), _u(rng, 0.3, 0.5), _u(rng, 0.35, 0.5)
    seat_t = _u(rng, 0.04, 0.08)
    b.add("seat", box((0, leg_h + seat_t / 2, 0), (w, seat_t, d)))
    panel = bool(rng.random() < 0.5)
    if panel:
        for sx in (-1, 1):
            b.add("leg", box((sx * (w / 2 - 0.1), leg_h / 2, 0), (0.05, leg_h, d * 0.9)))
        legs = 2
    else:
        _legs(b, rng, w * 0.95, d * 0.9, leg_h, leg_h, 0.05, False)
        legs = 4
    back = bool(rng.random() < 0.5)
    if back:
        bh = _u(rng, 0.25, 0.4)
        b.add("backrest", box((0, leg_h + seat_t + bh / 2, -d / 2 + 0.02), (w, bh, 0.04)))
    b.attributes = {"legs": legs, "has_backrest": back}
    return b.build()


def sofa(rng):
    b = _Builder("sofa")
    w, d, base_h = _u(rng, 1.4, 2.4), _u(rng, 0.7, 1.0), _u(rng, 0.3, 0.45)
    back_h, back_t, arm_w = _u(rng, 0.35, 0.55), _u(rng, 0.15, 0.25), _u(rng, 0.12, 0.22)
    arm_h = _u(rng, 0.15, 0.3)
    b.add("base", box((0, base_h / 2, 0), (w, base_h, d)))
    b.add("backrest", box((0, base_h + back_h / 2, -d / 2 + back_t / 2), (w, back_h, back_t)))
    for sx in (-1, 1):
        b.add("armrest", box((sx * (w / 2 - arm_w / 2), base_h + arm_h / 2, back_t / 2),
                             (arm_w, arm_h, d - back_t)))  # fmt: skip
    n = int(rng.integers(1, 4))
    cw, ch = (w - 2 * arm_w) / n, _u(rng, 0.06, 0.12)
    for i in range(n):
        cx = -w / 2 + arm_w + cw * (i + 0.5)
        b.add("cushion", box((cx, base_h + ch / 2, back_t / 2), (cw * 0.96, ch, d - back_t)))
    b.attributes = {"cushions": n, "has_armrests": True}
    return b.build()


def bookshelf(rng):
    b = _Builder("bookshelf")
    w, h, d, t = _u(rng, 0.5, 1.2), _u(rng, 0.8, 2.0), _u(rng, 0.25, 0.4), _u(rng, 0.02, 0.04)
    for sx in (-1, 1):
        b.add("side panel", box((sx * (w / 2 - t / 2), h / 2, 0), (t, h, d)))
    b.add("back panel", box((0, h / 2, -d / 2 + t / 4), (w - 2 * t, h, t / 2)))
    n = int(rng.integers(2, 6))
    for i in range(n + 2):  # bottom, top and n shelves in between
        y = t / 2 + (h - t) * i / (n + 1)
        b.add("shelf", box((0, y, t / 4), (w - 2 * t, t, d - t / 2)))
    b.attributes = {"shelves": n + 2}
    return b.build()


def airplane(rng):
    b = _Builder("airplane")
    length, fr = _u(rng, 1.5, 2.5), _u(rng, 0.08, 0.15)
    span, chord = _u(rng, 1.4, 2.4), _u(rng, 0.25, 0.45)
    b.add("fuselage", ellipsoid((0, 0, 0), (fr, fr, length / 2)))
    b.add("wing", box((0, -fr * 0.3, _u(rng, -0.1, 0.15) * length), (span, 0.03, chord)))
    b.add("tail fin", box((0, fr + 0.12, -length / 2 + 0.15), (0.03, 0.3, 0.22)))
    b.add("stabilizer", box((0, fr * 0.3, -length / 2 + 0.12), (span * 0.35, 0.02, 0.16)))
    engines = int(rng.choice([0, 2, 4]))
    for k in range(engines // 2):
        for sx in (-1, 1):
            x = sx * span * (0.2 + 0.15 * k)
            b.add("engine", cylinder((x, -fr * 0.3 - 0.07, 0.05), 0.05, 0.3, axis="z", segments=14))
    b.attributes = {"engines": engines}
    return b.build()


def car(rng):
    b = _Builder("car")
    length, w, body_h = _u(rng, 1.6, 2.4), _u(rng, 0.7, 0.95), _u(rng, 0.25, 0.4)
    wheel_r = _u(rng, 0.12, 0.18)
    cab_h, cab_l = _u(rng, 0.2, 0.35), _u(rng, 0.4, 0.6) * length
    b.add("body", box((0, wheel_r + body_h / 2, 0), (w, body_h, length)))
    b.add("cabin", box((0, wheel_r + body_h + cab_h / 2, -0.05 * length), (w * 0.85, cab_h, cab_l)))
    for sx in (-1, 1):
        for sz in (-1, 1):
            b.add(
                "wheel",
                cylinder((sx * w / 2, wheel_r, sz * length * 0.32), wheel_r, 0.12, axis="x"),
            )
    spoiler = bool(rng.random() < 0.3)
    if spoiler:
        b.add(
            "spoiler", box((0, wheel_r + body_h + 0.05, -length / 2 + 0.08), (w * 0.8, 0.03, 0.12))
        )
    b.attributes = {"wheels": 4, "has_spoiler": spoiler}
    return b.build()


def bowl(rng):
    b = _Builder("bowl")
    r, h, wall = _u(rng, 0.4, 0.6), _u(rng, 0.18, 0.35), _u(rng, 0.02, 0.04)
    t = np.linspace(0, math.pi / 2, 9)
    outer = [(r * math.sin(a), h * (1 - math.cos(a))) for a in t]
    inner = [((r - wall) * math.sin(a), wall + (h - wall) * (1 - math.cos(a))) for a in t[::-1]]
    prof = [(0.0, 0.0)] + outer[1:] + [(r - wall, h)] + inner[1:-1] + [(0.0, wall)]
    b.add("body", lathe(prof, 32))
    foot = bool(rng.random() < 0.5)
    if foot:
        b.add("foot", cylinder((0, -0.02, 0), r * 0.35, 0.05, segments=24))
    b.attributes = {"has_foot": foot}
    return b.build()


def monitor(rng):
    b = _Builder("monitor")
    w, h, t = _u(rng, 0.9, 1.5), _u(rng, 0.5, 0.9), _u(rng, 0.03, 0.08)
    neck_h = _u(rng, 0.15, 0.3)
    base_d = _u(rng, 0.2, 0.35)
    b.add("base", box((0, 0.015, 0), (w * 0.35, 0.03, base_d)))
    b.add("stand", box((0, 0.03 + neck_h / 2, -0.02), (0.06, neck_h, 0.04)))
    b.add("screen", box((0, 0.03 + neck_h + h / 2, 0.02), (w, h, t)))
    b.attributes = {"widescreen": w / h > 1.6}
    return b.build()


def cabinet(rng):
    b = _Builder("cabinet")
    w, h, d = _u(rng, 0.5, 1.2), _u(rng, 0.6, 1.4), _u(rng, 0.35, 0.6)
    leg_h = _u(rng, 0.0, 0.12)
    b.add("body", box((0, leg_h + h / 2, 0), (w, h, d)))
    drawers = int(rng.integers(1, 5))
    for i in range(drawers):
        y = leg_h + h * (i + 0.5) / drawers
        b.add("handle", box((0, y, d / 2 + 0.015), (w * 0.25, 0.025, 0.03)))
    if leg_h > 0.03:
        _legs(b, rng, w * 0.95, d * 0.95, leg_h, leg_h, 0.04, True)
    b.attributes = {"drawers": drawers, "has_legs": leg_h > 0.03}
    return b.build()


def bed(rng):
    b = _Builder("bed")
    w, length, frame_h = _u(rng, 1.0, 1.8), _u(rng, 1.9, 2.2), _u(rng, 0.2, 0.35)
    mat_h, head_h = _u(rng, 0.12, 0.25), _u(rng, 0.4, 0.8)
    b.add("frame", box((0, frame_h / 2, 0), (w, frame_h, length)))
    b.add("mattress", box((0, frame_h + mat_h / 2, 0.02), (w * 0.96, mat_h, length * 0.96)))
    b.add("headboard", box((0, head_h / 2, -length / 2 - 0.03), (w, head_h, 0.06)))
    foot = bool(rng.random() < 0.5)
    if foot:
        fh = frame_h + mat_h * 0.5
        b.add("footboard", box((0, fh / 2, length / 2 + 0.03), (w, fh, 0.06)))
    pillows = int(rng.integers(0, 3))
    for i in range(pillows):
        x = 0.0 if pillows == 1 else (i - 0.5) * w * 0.45
        b.add("pillow", box((x, frame_h + mat_h + 0.04, -length / 2 + 0.25), (w * 0.38, 0.08, 0.3)))
    b.attributes = {"pillows": pillows, "has_footboard": foot}
    return b.build()


FAMILIES: dict[str, Callable[[np.random.Generator], PartMesh]] = {
    "chair": chair,
    "table": table,
    "lamp": lamp,
    "mug": mug,
    "bottle": bottle,
    "bench": bench,
    "sofa": sofa,
    "bookshelf": bookshelf,
    "airplane": airplane,
    "car": car,
    "bowl": bowl,
    "monitor": monitor,
    "cabinet": cabinet,
    "bed": bed,
}
assert tuple(FAMILIES) == CATEGORIES


# ----------------------------------------------------------------------------- normalization
def normalize(mesh: PartMesh) -> tuple[PartMesh, np.ndarray, float]:
    """ShapeNet normalization: centre the bounding box at 0 and scale its diagonal to 1.

    Returns (normalized mesh, centre (3,), scale) with ``x_norm = (x - centre) * scale``;
    the inverse maps boxes back to the source frame.
    """
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    diag = float(np.linalg.norm(hi - lo))
    if not np.isfinite(diag) or diag <= 0:
        raise ValueError("normalize: degenerate bounding box (zero or non-finite diagonal)")
    centre = (lo + hi) / 2.0
    out = mesh.copy()
    out.vertices = (mesh.vertices - centre) / diag
    return out, centre, 1.0 / diag


def make_shape(category: str, rng: np.random.Generator) -> PartMesh:
    """A normalized procedural mesh of ``category`` drawn from its family with ``rng``."""
    if category not in FAMILIES:
        raise ValueError(f"category={category!r}: expected one of {CATEGORIES}")
    mesh, _, _ = normalize(FAMILIES[category](rng))
    return mesh
