"""Embedded synthetic DensePose-COCO: procedural people made of the 24 DensePose fine parts.

Every person is a skeleton (pelvis, neck, shoulders, elbows, wrists, hips, knees, ankles, head) posed at
random and drawn as capsules (limbs, hands, feet, torso) and an ellipse (head, split into right and left
face). Each part carries a smooth chart: U runs along the part (0 at the proximal end, 1 at the distal
end; top to chin for the head), V across it (limbs, hands, feet: medial 0 -> lateral 1 anatomically,
whichever way the person faces; torso: person's left 0 -> right 1; head halves: midline 0 -> side 1).
People face the camera (front parts: 2, 9, 10, 13, 14, 15, 16, 21, 22) or turn their back (1, 7, 8, 11,
12, 17, 18, 19, 20); both head halves 23/24 show either way.

With these charts a horizontal mirror of a synthetic person is again a valid synthetic person whose
labels are swapped left/right (the official POINT_LABEL_SYMMETRIES) and whose (U, V) map through
identity tables, except the torso (parts 1, 2) where V -> 1 - V. `synthetic_uv_symmetry_tables()`
builds those tables; the generator writes them as `UV_symmetry_transforms.mat` (official layout) in the
dataset root, so flip augmentation works on the synthetic set without the official file.

Output (COCO JSON, the DensePose-COCO fields): images, categories [{"id": 1, "name": "person"}],
annotations with bbox (tight around the visible person), area, iscrowd 0, category_id 1, segmentation
(RLE of the visible person), dp_x, dp_y (pixel centres of the 256 x 256 box frame, so in [0.5, 255.5]),
dp_I (floats 1..24 as in the official files), dp_U, dp_V, dp_masks (14 RLE dicts with str counts or []).
Generation is deterministic for a seed; image k of a split depends only on (seed, split, k).
"""
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..structures.densepose_annotations import FINE_TO_COARSE, DensePoseTransformData

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"}]
_FINE_TO_COARSE = np.asarray(FINE_TO_COARSE, dtype=np.uint8)
_SPLIT_IDS = {"train": 0, "val": 1}

# fine labels per (limb, side, facing) ------------------------------------------------------------
# side: "R"/"L"; facing: +1 front, -1 back
_LIMB_LABELS = {
    ("upper_leg", "R"): (9, 7), ("upper_leg", "L"): (10, 8),
    ("lower_leg", "R"): (13, 11), ("lower_leg", "L"): (14, 12),
    ("upper_arm", "R"): (16, 18), ("upper_arm", "L"): (15, 17),
    ("lower_arm", "R"): (22, 20), ("lower_arm", "L"): (21, 19),
    ("hand", "R"): (3, 3), ("hand", "L"): (4, 4),
    ("foot", "R"): (6, 6), ("foot", "L"): (5, 5),
}  # fmt: skip  (front label, back label)

# A fixed colour per fine part (BGR, 0..255): left/right and front/back differ, so parts are learnable.
_PART_PALETTE = np.array(
    [
        [0, 0, 0],
        [60, 70, 160], [70, 90, 200],  # torso back / front
        [90, 160, 230], [150, 200, 240],  # hands R / L
        [40, 40, 90], [90, 60, 40],  # feet L / R
        [160, 60, 40], [40, 140, 60], [200, 90, 60], [60, 180, 90],  # upper legs
        [140, 40, 90], [90, 120, 30], [190, 70, 130], [120, 170, 40],  # lower legs
        [40, 180, 200], [200, 180, 40], [30, 140, 160], [160, 140, 30],  # upper arms
        [120, 60, 180], [180, 60, 120], [160, 100, 220], [220, 100, 160],  # lower arms
        [140, 170, 210], [110, 150, 200],  # head R / L
    ],
    dtype=np.float32,
)


def _distinct_palette() -> np.ndarray:
    """(25, 3) BGR float32: part k at hue (7 k mod 24) / 24 of a turn, alternating saturation / brightness,
    so that any two parts (front / back, left / right) differ clearly in hue."""
    import colorsys

    out = np.zeros((25, 3), np.float32)
    for k in range(1, 25):
        r, g, b = colorsys.hsv_to_rgb(((k * 7) % 24) / 24.0, 0.85 if k % 2 else 0.6, 0.95 if k % 2 else 0.7)
        out[k] = (255 * b, 255 * g, 255 * r)
    return out


_DISTINCT_PALETTE = _distinct_palette()


@dataclass(frozen=True)
class Layout:
    """How the images of a synthetic set are composed (`LAYOUTS`)."""

    name: str
    people: Tuple[int, ...]  # possible numbers of people per image ...
    people_p: Tuple[float, ...]  # ... and their probabilities
    height_frac: Tuple[Tuple[float, float], ...]  # person height / image height range, per number of people
    max_overlap: float  # largest box overlap (intersection / smaller box) between two people
    background: str  # "simple": colour field + a few shapes; "rich": also floor, textures, clutter
    palette_weight: float = 0.6  # part colour = w * fixed part colour + (1 - w) * random clothes / skin
    palette: str = "classic"  # fixed part colours: "classic" (`_PART_PALETTE`: front and back parts of a
    # limb or the torso differ only slightly) or "distinct" (`_DISTINCT_PALETTE`: 24 far-apart hues)


LAYOUTS: Dict[str, Layout] = {
    # the original set (GENERATOR_VERSION 1): 1-4 people, simple backgrounds; tests use it at small sizes
    "classic": Layout("classic", (1, 2, 3, 4), (0.35, 0.3, 0.2, 0.15),
                      ((0.4, 0.95), (0.4, 0.85), (0.4, 0.75), (0.4, 0.7)), 0.35, "simple"),
    # the demo's set: 1-3 larger people, less occlusion, cluttered textured backgrounds
    # (distinct part colours, less diluted by the clothes: a person seen from the back is the mirror image
    # of one seen from the front, so colour is the only cue to the front / back parts; parts learn fast)
    "demo": Layout("demo", (1, 2, 3), (0.4, 0.35, 0.25), ((0.6, 0.95), (0.5, 0.85), (0.45, 0.75)), 0.25, "rich",
                   palette_weight=0.8, palette="distinct"),
}  # fmt: skip


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown synthetic layout '{name}' (expected one of {sorted(LAYOUTS)})")
    return LAYOUTS[name]


@dataclass
class _Part:
    fine: int
    kind: str  # "capsule" or "head"
    a: np.ndarray  # capsule start / head centre
    b: np.ndarray  # capsule end / head "up" unit vector
    r: float  # capsule radius / head half-width
    sv: float = 1.0  # sign of V across the capsule; for the head: facing
    length: float = 0.0  # head half-height


@dataclass
class _Person:
    parts: List[_Part]
    facing: int
    colors: np.ndarray  # (25, 3) BGR per fine label


def _rot(v: np.ndarray, ang: float) -> np.ndarray:
    c, s = np.cos(ang), np.sin(ang)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _skeleton(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Joints of a front-facing person of height ~1 (y down, person's right at -x, pelvis at 0)."""
    j: Dict[str, np.ndarray] = {"pelvis": np.zeros(2)}
    lean = float(np.clip(rng.normal(0, 0.12), -0.35, 0.35))
    up = _rot(np.array([0.0, -1.0]), lean)
    j["neck"] = j["pelvis"] + 0.34 * up
    right = _rot(np.array([-1.0, 0.0]), lean)
    j["head"] = j["neck"] + 0.10 * _rot(up, float(rng.normal(0, 0.15)))
    for side, lat in (("R", -1.0), ("L", 1.0)):
        j["shoulder" + side] = j["neck"] - lat * 0.15 * right - 0.035 * up
        a1 = rng.uniform(0.1, 1.6) if rng.random() < 0.8 else rng.uniform(1.6, 2.8)
        a2 = a1 + rng.uniform(-0.6, 1.6)
        d1 = np.array([lat * np.sin(a1), np.cos(a1)])
        d2 = np.array([lat * np.sin(a2), np.cos(a2)])
        d1, d2 = _rot(d1, lean), _rot(d2, lean)
        j["elbow" + side] = j["shoulder" + side] + 0.16 * d1
        j["wrist" + side] = j["elbow" + side] + 0.15 * d2
        j["hand_dir" + side] = _rot(d2, lat * rng.uniform(-0.3, 0.3))
        j["hip" + side] = np.array([lat * 0.075, 0.0])
        l1 = rng.uniform(-0.08, 0.55)
        l2 = l1 + rng.uniform(-0.5, 0.15)
        e1 = np.array([lat * np.sin(l1), np.cos(l1)])
        e2 = np.array([lat * np.sin(l2), np.cos(l2)])
        j["knee" + side] = j["hip" + side] + 0.24 * e1
        j["ankle" + side] = j["knee" + side] + 0.23 * e2
        fa = l2 + rng.uniform(1.1, 1.6)
        j["foot_dir" + side] = np.array([lat * np.sin(fa), np.cos(fa)])
    return j


def _mirror_skeleton(j: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The skeleton mirrored left-right (x -> -x) with right and left joints exchanged."""
    swap = {"R": "L", "L": "R"}
    out = {}
    for key, p in j.items():
        new_key = key[:-1] + swap[key[-1]] if key[-1] in swap else key
        out[new_key] = np.array([-p[0], p[1]])
    return out


def _make_person(rng: np.random.Generator, height: float, center: np.ndarray, facing: int,
                 palette_weight: float = 0.6, palette: str = "classic") -> _Person:
    j = _skeleton(rng)
    tilt = float(rng.normal(0, 0.08))
    thickness = float(rng.uniform(0.85, 1.15))
    clothes = rng.uniform(30, 230, size=(3, 3)).astype(np.float32)  # shirt, trousers, shoes
    skin = np.array([120, 150, 200], np.float32) * rng.uniform(0.5, 1.1)
    group = np.zeros((25, 3), np.float32)
    for lbl in (1, 2, 15, 16, 17, 18):
        group[lbl] = clothes[0]
    for lbl in range(7, 15):
        group[lbl] = clothes[1]
    group[[5, 6]] = clothes[2]
    for lbl in (3, 4, 19, 20, 21, 22, 23, 24):
        group[lbl] = skin
    fixed = _DISTINCT_PALETTE if palette == "distinct" else _PART_PALETTE
    colors = np.clip(palette_weight * fixed + (1.0 - palette_weight) * group, 0, 255)
    return _build_person(j, height, center, facing, tilt, thickness, colors)


def _build_person(
    j: Dict[str, np.ndarray],
    height: float,
    center: np.ndarray,
    facing: int,
    tilt: float,
    thickness: float,
    colors: np.ndarray,
) -> _Person:
    """Parts of a person from its skeleton (person frame), size, position, facing and tilt."""
    mirror = np.array([1.0, 1.0]) if facing > 0 else np.array([-1.0, 1.0])

    def P(p: np.ndarray) -> np.ndarray:  # person frame -> image pixels
        return center + height * _rot(p * mirror, tilt)

    def D(d: np.ndarray) -> np.ndarray:  # direction -> image direction
        v = _rot(d * mirror, tilt)
        return v / (np.linalg.norm(v) + 1e-12)

    fi = 0 if facing > 0 else 1
    w = height * thickness

    def limb(name: str, side: str, a: np.ndarray, b: np.ndarray, r: float) -> _Part:
        s = 1.0 if side == "R" else -1.0
        return _Part(_LIMB_LABELS[(name, side)][fi], "capsule", a, b, r, sv=s * facing)

    legs, arms = [], []
    for side in ("R", "L"):
        hip, knee, ankle = P(j["hip" + side]), P(j["knee" + side]), P(j["ankle" + side])
        legs.append(limb("upper_leg", side, hip, knee, 0.055 * w))
        legs.append(limb("lower_leg", side, knee, ankle, 0.043 * w))
        legs.append(limb("foot", side, ankle, ankle + 0.09 * height * D(j["foot_dir" + side]), 0.03 * w))
        sh, el, wr = P(j["shoulder" + side]), P(j["elbow" + side]), P(j["wrist" + side])
        arms.append(limb("upper_arm", side, sh, el, 0.038 * w))
        arms.append(limb("lower_arm", side, el, wr, 0.032 * w))
        arms.append(limb("hand", side, wr, wr + 0.06 * height * D(j["hand_dir" + side]), 0.03 * w))
    torso_a = P(j["neck"] + 0.06 * (j["pelvis"] - j["neck"]))
    torso_b = P(j["pelvis"] + 0.02 * (j["pelvis"] - j["neck"]))
    torso = _Part(2 if facing > 0 else 1, "capsule", torso_a, torso_b, 0.125 * w, sv=float(facing))
    up = D(j["head"] - j["neck"])
    head = _Part(23, "head", P(j["head"]) + 0.03 * height * up, up, 0.07 * height, sv=float(facing),
                 length=0.09 * height)  # fmt: skip
    parts = legs + [torso] + arms + [head]
    return _Person(parts, facing, colors)


def _eval_part(part: _Part, xs: np.ndarray, ys: np.ndarray):
    """(indices inside, fine labels, U, V) of the points (xs, ys) covered by `part`."""
    if part.kind == "capsule":
        a, b, r = part.a, part.b, part.r
        lo = np.minimum(a, b) - r
        hi = np.maximum(a, b) + r
    else:
        ext = max(part.r, part.length)
        lo, hi = part.a - ext, part.a + ext
    cand = np.nonzero((xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1]) & (ys <= hi[1]))[0]
    if cand.size == 0:
        return cand, None, None, None
    px, py = xs[cand] - part.a[0], ys[cand] - part.a[1]
    if part.kind == "capsule":
        d = part.b - part.a
        length = float(np.hypot(d[0], d[1])) + 1e-9
        ux, uy = d / length
        t = px * ux + py * uy
        perp = -px * uy + py * ux
        tc = np.clip(t, 0.0, length)
        inside = (t - tc) ** 2 + perp**2 <= r * r
        u = (t + r) / (length + 2 * r)
        v = 0.5 + part.sv * perp / (2 * r)
        labels = np.full(inside.sum(), part.fine, np.uint8)
    else:
        ux, uy = part.b
        along = px * ux + py * uy
        across = -px * uy + py * ux
        inside = (along / part.length) ** 2 + (across / part.r) ** 2 <= 1.0
        u = (part.length - along) / (2 * part.length)
        v = np.abs(across) / part.r
        labels = np.where(across[inside] * part.sv < 0, 23, 24).astype(np.uint8)
    return cand[inside], labels, np.clip(u[inside], 0, 1), np.clip(v[inside], 0, 1)


def _render(people: Sequence[_Person], xs: np.ndarray, ys: np.ndarray):
    """Evaluate the scene at points: (fine label uint8, U, V float32, owner int16 (-1 = background))."""
    n = xs.size
    lab = np.zeros(n, np.uint8)
    uu = np.zeros(n, np.float32)
    vv = np.zeros(n, np.float32)
    owner = np.full(n, -1, np.int16)
    for k, person in enumerate(people):
        lo, hi = _person_extent(person)
        sel = np.nonzero((xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1]) & (ys <= hi[1]))[0]
        if sel.size == 0:
            continue
        px, py = xs[sel], ys[sel]
        for part in person.parts:
            idx, labels, u, v = _eval_part(part, px, py)
            if idx.size == 0 or labels is None or labels.size == 0:
                continue
            idx = sel[idx]
            lab[idx], uu[idx], vv[idx], owner[idx] = labels, u, v, k
    return lab, uu, vv, owner


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    base = rng.uniform(20, 235, size=(gh, gw, 3)).astype(np.float32)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 8))):
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.rectangle(img, p1, p2, color, -1 if rng.random() < 0.5 else int(rng.integers(1, 4)))
        else:
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            ax = (int(rng.integers(3, max(4, w // 4))), int(rng.integers(3, max(4, h // 4))))
            cv2.ellipse(img, c, ax, float(rng.uniform(0, 180)), 0, 360, color, -1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.02, 0.3)
    ang = rng.uniform(0, np.pi)
    img += (12 * np.sin(f * (np.cos(ang) * xx + np.sin(ang) * yy)))[..., None]
    return np.clip(img, 0, 255)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random full-image texture (float32 BGR): stripes, checkerboard, blotchy noise or a gradient."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c1, c2 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    kind = int(rng.integers(0, 4))
    ang = rng.uniform(0, np.pi)
    if kind == 0:  # stripes
        period = rng.uniform(6, 40)
        t = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * (np.cos(ang) * xx + np.sin(ang) * yy) / period))
    elif kind == 1:  # checkerboard
        cell = rng.uniform(6, 32)
        xr, yr = np.cos(ang) * xx + np.sin(ang) * yy, -np.sin(ang) * xx + np.cos(ang) * yy
        t = ((np.floor(xr / cell) + np.floor(yr / cell)) % 2).astype(np.float32)
    elif kind == 2:  # blotches
        gh, gw = int(rng.integers(6, 24)), int(rng.integers(6, 24))
        t = cv2.resize(rng.random((gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    else:  # linear gradient
        t = np.cos(ang) * xx + np.sin(ang) * yy
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    t = np.clip(t, 0, 1)[..., None]
    return c1 * (1 - t) + c2 * t


def _background_rich(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A cluttered scene: colour field, a floor, textured regions and many shapes and sticks."""
    img = _background(rng, h, w)
    if rng.random() < 0.7:  # floor below a horizon, with its own texture
        y0 = int(rng.uniform(0.45, 0.8) * h)
        img[y0:] = 0.35 * img[y0:] + 0.65 * _texture(rng, h - y0, w)
    for _ in range(int(rng.integers(1, 4))):  # textured patches (rectangles or ellipses)
        mask = np.zeros((h, w), np.uint8)
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        ax = (int(rng.integers(w // 10, w // 3)), int(rng.integers(h // 10, h // 3)))
        if rng.random() < 0.5:
            cv2.rectangle(mask, (c[0] - ax[0], c[1] - ax[1]), (c[0] + ax[0], c[1] + ax[1]), 1, -1)
        else:
            cv2.ellipse(mask, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        m = mask.astype(bool)
        img[m] = _texture(rng, h, w)[m]
    for _ in range(int(rng.integers(6, 16))):  # clutter: sticks, polygons, discs
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = rng.random()
        if kind < 0.4:
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p2 = (int(p1[0] + rng.normal(0, w / 5)), int(p1[1] + rng.normal(0, h / 5)))
            cv2.line(img, p1, p2, color, int(rng.integers(2, max(3, min(h, w) // 25))), cv2.LINE_AA)
        elif kind < 0.75:
            n = int(rng.integers(3, 7))
            c = rng.uniform([0, 0], [w, h])
            r = rng.uniform(5, min(h, w) / 8)
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            pts = (c + r * rng.uniform(0.5, 1.0, (n, 1)) * np.stack([np.cos(ang), np.sin(ang)], 1)).astype(np.int32)
            cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
        else:
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(img, c, int(rng.integers(3, max(4, min(h, w) // 12))), color, -1, cv2.LINE_AA)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.5)))
    return np.clip(img, 0, 255)


def _person_extent(person: _Person) -> Tuple[np.ndarray, np.ndarray]:
    pts, rad = [], []
    for p in person.parts:
        if p.kind == "capsule":
            pts += [p.a, p.b]
            rad += [p.r, p.r]
        else:
            pts.append(p.a)
            rad.append(max(p.r, p.length))
    pts_a, rad_a = np.array(pts), np.array(rad)[:, None]
    return (pts_a - rad_a).min(0), (pts_a + rad_a).max(0)


def _overlap(b1: Sequence[float], b2: Sequence[float]) -> float:
    ix = max(0.0, min(b1[2], b2[2]) - max(b1[0], b2[0]))
    iy = max(0.0, min(b1[3], b2[3]) - max(b1[1], b2[1]))
    inter = ix * iy
    smaller = min((b1[2] - b1[0]) * (b1[3] - b1[1]), (b2[2] - b2[0]) * (b2[3] - b2[1]))
    return inter / max(smaller, 1e-9)


def _rle(mask: np.ndarray) -> Dict[str, Any]:
    import pycocotools.mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _sample_people(rng: np.random.Generator, h: int, w: int, layout: "Layout" = None) -> List[_Person]:
    layout = LAYOUTS["classic"] if layout is None else layout
    n_target = int(rng.choice(list(layout.people), p=list(layout.people_p)))
    lo_frac, hi_frac = layout.height_frac[n_target - 1]
    people, boxes = [], []
    for _ in range(n_target):
        height = rng.uniform(lo_frac, hi_frac) * h
        placed = False
        for _shrink in range(4):
            facing = 1 if rng.random() < 0.6 else -1
            person = _make_person(rng, height, np.zeros(2), facing, layout.palette_weight, layout.palette)
            lo, hi = _person_extent(person)
            size = hi - lo
            for _attempt in range(12 if size[0] <= 0.95 * w else 0):
                # allow up to 8% of the person outside the image on each side
                x0 = rng.uniform(-lo[0] - 0.08 * size[0], w - hi[0] + 0.08 * size[0])
                y0 = rng.uniform(-lo[1] - 0.08 * size[1], h - hi[1] + 0.08 * size[1])
                box = [lo[0] + x0, lo[1] + y0, hi[0] + x0, hi[1] + y0]
                if any(_overlap(box, b) > layout.max_overlap for b in boxes):
                    continue
                shift = np.array([x0, y0])
                for p in person.parts:
                    p.a = p.a + shift
                    if p.kind == "capsule":
                        p.b = p.b + shift
                people.append((height, person))
                boxes.append(box)
                placed = True
                break
            if placed:
                break
            height *= 0.8  # no room: try a smaller person
    people.sort(key=lambda t: t[0])  # smaller (farther) people first, larger ones occlude them
    return [p for _, p in people]


def render_synthetic_image(
    rng: np.random.Generator, min_size: int = 128, max_size: int = 192, num_points: int = 100,
    layout: str = "classic",
) -> Tuple[np.ndarray, List[Dict[str, Any]], Dict[str, np.ndarray]]:
    """One image: (BGR uint8 image, COCO annotations without ids, dense maps I/U/V/owner at image size).
    `num_points`: DensePose points sampled per person (at most one per cell of its 256 x 256 box frame);
    `layout`: a name of `LAYOUTS`."""
    lay = get_layout(layout)
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    short = int(rng.integers(min_size, max_size + 1))
    long_ = int(round(short * rng.uniform(1.0, 1.5)))
    h, w = (short, long_) if rng.random() < 0.6 else (long_, short)
    people = _sample_people(rng, h, w, lay)

    ys, xs = np.mgrid[0:h, 0:w]
    lab, uu, vv, owner = _render(people, xs.ravel() + 0.5, ys.ravel() + 0.5)
    lab, uu, vv, owner = (a.reshape(h, w) for a in (lab, uu, vv, owner))

    img = _background(rng, h, w) if lay.background == "simple" else _background_rich(rng, h, w)
    fg = owner >= 0
    if fg.any():
        colors = np.stack([p.colors for p in people])  # (P, 25, 3)
        base = colors[owner[fg], lab[fg]]
        tex = (0.8 + 0.2 * np.sin(2 * np.pi * 2.0 * uu[fg])) * (0.85 + 0.3 * vv[fg])
        img[fg] = np.clip(base * tex[:, None], 0, 255)
    img += rng.normal(0, rng.uniform(2, 8), size=img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)

    anns = []
    grid = (np.arange(256, dtype=np.float64) + 0.5) / 256.0
    for k in range(len(people)):
        vis = owner == k
        area = int(vis.sum())
        if area < 16:
            continue
        rows, cols = np.nonzero(vis.any(1))[0], np.nonzero(vis.any(0))[0]
        x0, y0, x1, y1 = float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)
        bw, bh = x1 - x0, y1 - y0
        ann: Dict[str, Any] = {
            "bbox": [x0, y0, bw, bh],
            "area": float(area),
            "iscrowd": 0,
            "category_id": 1,
            "segmentation": _rle(vis),
        }
        if bw >= 8 and bh >= 8:
            fx = np.broadcast_to(x0 + grid[None, :] * bw, (256, 256)).ravel()
            fy = np.broadcast_to(y0 + grid[:, None] * bh, (256, 256)).ravel()
            flab, fu, fv, fown = _render(people, fx, fy)
            mine = fown == k
            if mine.sum() >= 16:
                coarse = np.where(mine, _FINE_TO_COARSE[flab], 0).reshape(256, 256)
                masks = [_rle(coarse == c) if (coarse == c).any() else [] for c in range(1, 15)]
                cand = np.nonzero(mine)[0]
                counts = np.bincount(flab[cand], minlength=25).astype(np.float64)
                weights = 1.0 / np.sqrt(counts[flab[cand]])
                n_pts = min(num_points, cand.size)
                pick = np.sort(rng.choice(cand, size=n_pts, replace=False, p=weights / weights.sum()))
                ann.update(
                    dp_x=[float(p % 256) + 0.5 for p in pick],
                    dp_y=[float(p // 256) + 0.5 for p in pick],
                    dp_I=[float(i) for i in flab[pick]],
                    dp_U=[round(float(u), 6) for u in fu[pick]],
                    dp_V=[round(float(v), 6) for v in fv[pick]],
                    dp_masks=masks,
                )
        anns.append(ann)
    dense = {"I": lab, "U": uu, "V": vv, "owner": owner}
    return img, anns, dense


def render_split_image(
    root: Union[str, os.PathLike], split: str, image_id: int
) -> Tuple[np.ndarray, List[Dict[str, Any]], Dict[str, np.ndarray]]:
    """Image `image_id` (1-based, as in the JSON) of a generated split rendered again from the set's
    manifest: (BGR image before JPEG, annotations, dense I/U/V/owner maps), e.g. the dense ground truth
    of a validation picture without `save_dense` files."""
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    if manifest.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(f"{root}: generator version {manifest.get('generator_version')}, expected {GENERATOR_VERSION}")
    if not 1 <= int(image_id) <= int(manifest[f"num_{split}"]):
        raise ValueError(f"image_id {image_id} outside 1..{manifest[f'num_{split}']} of split '{split}'")
    rng = np.random.default_rng([int(manifest["seed"]), _SPLIT_IDS[split], int(image_id) - 1])
    return render_synthetic_image(rng, manifest["min_size"], manifest["max_size"],
                                  manifest.get("points_per_person", 100), manifest.get("layout", "classic"))


def synthetic_uv_symmetry_tables() -> Tuple[np.ndarray, np.ndarray]:
    """(U, V) tables (24, 256, 256) of the synthetic charts: identity, but V -> 1 - V on the torso."""
    u, v = DensePoseTransformData.identity_tables()
    v[0:2] = 1.0 - v[0:2]
    return u, v


SYNTHETIC_MESH_NAME = "synthetic_body"


def synthetic_cse_paths(root: Union[str, os.PathLike], split: str) -> Tuple[str, str]:
    """(images folder, CSE annotation JSON) of a split under `root` (the JSON written by `add_cse_annotations`)."""
    images, ann = synthetic_split_paths(root, split)
    return images, ann[: -len(".json")] + "_cse.json"


def synthetic_mesh_dir(root: Union[str, os.PathLike]) -> str:
    """Where the synthetic body's CSE mesh files live: <root>/meshes."""
    return os.path.join(os.fspath(root), "meshes")


def register_synthetic_mesh(root: Union[str, os.PathLike]) -> None:
    """Register SYNTHETIC_MESH_NAME in the mesh catalog with its files under <root>/meshes."""
    from ..evaluation.synthetic_mesh import mesh_file_names
    from .meshes import MeshInfo, register_mesh

    register_mesh(MeshInfo(SYNTHETIC_MESH_NAME, **mesh_file_names(SYNTHETIC_MESH_NAME),
                           data_dir=os.path.abspath(synthetic_mesh_dir(root))))


def add_cse_annotations(root: Union[str, os.PathLike]) -> None:
    """CSE ground truth for a generated set: the synthetic body mesh files (<root>/meshes, detectron2's
    formats; the same body as the synthetic chart evaluation data) and, per split, a copy of the JSON whose
    DensePose annotations also carry ``dp_vertex`` (the mesh vertex nearest to each point's (I, U, V), as
    the official evaluation maps chart points to vertices) and ``ref_model``."""
    from ..evaluation.synthetic_mesh import make_synthetic_mesh, write_mesh_files

    mesh = make_synthetic_mesh()
    write_mesh_files(mesh, synthetic_mesh_dir(root), SYNTHETIC_MESH_NAME, synthetic_uv_symmetry_tables())
    for split in _SPLIT_IDS:
        src = synthetic_split_paths(root, split)[1]
        if not os.path.isfile(src):
            continue
        with open(src) as f:
            data = json.load(f)
        for ann in data["annotations"]:
            if "dp_I" in ann:
                ann["dp_vertex"] = mesh.nearest_vertices(ann["dp_I"], ann["dp_U"], ann["dp_V"]).tolist()
                ann["ref_model"] = SYNTHETIC_MESH_NAME
        dst = synthetic_cse_paths(root, split)[1]
        tmp = dst + f".tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, dst)
    register_synthetic_mesh(root)


def has_cse_annotations(root: Union[str, os.PathLike]) -> bool:
    from ..evaluation.synthetic_mesh import mesh_file_names

    files = [synthetic_cse_paths(root, s)[1] for s in _SPLIT_IDS]
    files += [os.path.join(synthetic_mesh_dir(root), f) for f in mesh_file_names(SYNTHETIC_MESH_NAME).values()]
    return all(os.path.isfile(f) for f in files)


def synthetic_split_paths(root: Union[str, os.PathLike], split: str) -> Tuple[str, str]:
    """(images folder, annotation JSON) of a split ("train" / "val") under `root`."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown synthetic split '{split}' (expected one of {sorted(_SPLIT_IDS)})")
    root = os.fspath(root)
    return os.path.join(root, split), os.path.join(root, "annotations", f"densepose_synthetic_{split}.json")


def _write_image(job: Tuple[Any, ...], k: int) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Render and write image k of a split: (its JSON image entry, its annotations without ids)."""
    img_dir, split, seed, min_size, max_size, save_dense, image_ext, points_per_person, layout = job
    rng = np.random.default_rng([int(seed), _SPLIT_IDS[split], k])
    img, anns, dense = render_synthetic_image(rng, min_size, max_size, points_per_person, layout)
    image_id = k + 1
    fname = f"{split}_{image_id:06d}{image_ext}"
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if image_ext == ".jpg" else []
    if not cv2.imwrite(os.path.join(img_dir, fname), img, params):
        raise OSError(f"cannot write image {os.path.join(img_dir, fname)}")
    if save_dense:
        np.savez_compressed(
            os.path.join(img_dir, fname.rsplit(".", 1)[0] + "_dense.npz"),
            I=dense["I"], U=(dense["U"] * 255).round().astype(np.uint8),
            V=(dense["V"] * 255).round().astype(np.uint8), owner=dense["owner"].astype(np.int8),
        )  # fmt: skip
    return {"id": image_id, "file_name": fname, "height": img.shape[0], "width": img.shape[1]}, anns


def generate_split(
    root: Union[str, os.PathLike],
    split: str,
    num_images: int,
    seed: int = 0,
    min_size: int = 128,
    max_size: int = 192,
    save_dense: bool = False,
    image_ext: str = ".jpg",
    points_per_person: int = 100,
    layout: str = "classic",
    workers: int = 1,
) -> Dict[str, Any]:
    """Write `num_images` images and the COCO JSON of one split; returns the JSON dict.
    `points_per_person`: DensePose points per person (DensePose-COCO has ~100); `layout`: see `LAYOUTS`;
    `workers` > 1: images rendered by that many processes (same files)."""
    get_layout(layout)
    if not 1 <= points_per_person <= 256 * 256:
        raise ValueError(f"points_per_person must be in 1..65536, got {points_per_person}")
    if not 8 <= min_size <= max_size:
        raise ValueError(f"need 8 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    if image_ext not in (".jpg", ".png"):
        raise ValueError(f"image_ext must be .jpg or .png, got {image_ext}")
    img_dir, json_path = synthetic_split_paths(root, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    job = (os.fspath(img_dir), split, int(seed), min_size, max_size, save_dense, image_ext, points_per_person, layout)
    if workers > 1 and num_images > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(int(workers), num_images)) as pool:
            rendered = pool.starmap(_write_image, [(job, k) for k in range(num_images)], chunksize=8)
    else:
        rendered = [_write_image(job, k) for k in range(num_images)]
    images, annotations = [], []
    for image, anns in rendered:  # in image order: the same JSON whatever the number of workers
        images.append(image)
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], **ann})
    data = {
        "info": {"description": f"densepose_fnl synthetic DensePose-COCO ({split})", "version": GENERATOR_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    tmp = json_path + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, json_path)
    return data


def generate_synthetic_dataset(
    output: Union[str, os.PathLike],
    num_train: int = 200,
    num_val: int = 50,
    seed: int = 0,
    min_size: int = 128,
    max_size: int = 192,
    save_dense: bool = False,
    image_ext: str = ".jpg",
    points_per_person: int = 100,
    layout: str = "classic",
    workers: int = 1,
    cse: bool = False,
) -> Path:
    """Generate both splits, the synthetic UV symmetry .mat and a manifest under `output`; with `cse`
    also the CSE annotations and mesh files (`add_cse_annotations`).
    The defaults make the original ("classic") set; `DEMO_PRESET` is the demo's. `workers`: rendering
    processes (the files do not depend on it)."""
    t0 = time.time()
    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        manifest_path.unlink()  # invalid until the new set is complete
    stats = {}
    for split, n in (("train", num_train), ("val", num_val)):
        data = generate_split(root, split, n, seed, min_size, max_size, save_dense, image_ext, points_per_person,
                              layout, workers)
        stats[split] = {"images": len(data["images"]), "annotations": len(data["annotations"])}
    u, v = synthetic_uv_symmetry_tables()
    DensePoseTransformData.save(root / "UV_symmetry_transforms.mat", u.astype(np.float32), v.astype(np.float32))
    manifest = _manifest(num_train, num_val, seed, min_size, max_size, save_dense, image_ext, points_per_person,
                         layout)
    manifest["stats"] = stats
    if cse:
        add_cse_annotations(root)
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)
    logger.info("Synthetic DensePose set written to %s in %.1fs: %s", root, time.time() - t0, stats)
    return root


def _manifest(num_train, num_val, seed, min_size, max_size, save_dense, image_ext, points_per_person=100,
              layout="classic") -> Dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "seed": int(seed),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "save_dense": bool(save_dense),
        "image_ext": image_ext,
        "points_per_person": int(points_per_person),
        "layout": layout,
        # the layout's parameters: a set made with another definition of the layout is regenerated
        "layout_params": json.loads(json.dumps(asdict(get_layout(layout)))),
    }


def ensure_synthetic_dataset(
    root: Optional[Union[str, os.PathLike]] = None,
    num_train: int = 200,
    num_val: int = 50,
    seed: int = 0,
    min_size: int = 128,
    max_size: int = 192,
    save_dense: bool = False,
    image_ext: str = ".jpg",
    points_per_person: int = 100,
    layout: str = "classic",
    workers: int = 1,
    cse: bool = False,
) -> Path:
    """Return the synthetic dataset root, generating it first if it is missing, incomplete or was made
    with other parameters (with `cse`: also its CSE annotations, added if absent). `root` defaults to $DENSEPOSE_SYNTHETIC_ROOT or <DENSEPOSE_DATASETS>/synthetic
    (where `densepose_synthetic_train` / `densepose_synthetic_val` look)."""
    if root is None:
        from .datasets.builtin import synthetic_root

        root = synthetic_root()
    root = Path(root)
    want = _manifest(num_train, num_val, seed, min_size, max_size, save_dense, image_ext, points_per_person, layout)
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        try:
            have = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            have = {}
        have.pop("stats", None)
        complete = all(os.path.isfile(synthetic_split_paths(root, s)[1]) for s in _SPLIT_IDS) and (
            root / "UV_symmetry_transforms.mat"
        ).is_file()
        if have == want and complete:
            if cse and not has_cse_annotations(root):
                add_cse_annotations(root)
            return root
        logger.warning("Synthetic dataset at %s is incomplete or made with other parameters; regenerating", root)
    return generate_synthetic_dataset(root, num_train, num_val, seed, min_size, max_size, save_dense, image_ext,
                                      points_per_person, layout, workers, cse)


# The set `scripts/demo.sh` trains on: realistic image sizes, 1-3 people, cluttered backgrounds and dense
# supervision (many more points per person than DensePose-COCO's ~100), same JSON format.
DEMO_PRESET: Dict[str, Any] = dict(
    num_train=400, num_val=50, seed=0, min_size=320, max_size=384, points_per_person=1000, layout="demo"
)
