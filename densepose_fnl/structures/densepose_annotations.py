"""Ground truth of one DensePose-annotated person, relative to its box, and the data needed to flip it.

Conventions (those of DensePose-COCO and detectron2's DensePose project):

* points `x`, `y` live in a 256 x 256 frame laid over the person's box: a point maps to the image at
  `x_img = x0 + x * w / 256`, `y_img = y0 + y * h / 256` (box `x0, y0, w, h`);
* `i` is the fine part index 1..24, `u`, `v` its chart coordinates in [0, 1];
* CSE annotations (continuous surface embeddings) carry `dp_vertex` (0-based vertex of mesh `ref_model`
  per point) instead of, or besides, `dp_I`, `dp_U`, `dp_V`; a flip maps each vertex through the mesh's
  symmetry `vertex_transforms` (detectron2's `_flip_vertices`);
* `segm` is a 256 x 256 map of coarse part labels 0..14 (0 = background) decoded from the 14 RLE masks
  `dp_masks` (mask k gives label k + 1; later masks overwrite earlier ones);
* a horizontal flip maps `x -> 256 - x`, mirrors `segm` column-wise, swaps left/right labels and
  maps (u, v) of fine part p through the tables `U_transforms[p - 1][v_idx, u_idx]`,
  `V_transforms[p - 1][v_idx, u_idx]` with `u_idx = int(u * 255)`, `v_idx = int(v * 255)`, read from
  the official `UV_symmetry_transforms.mat`.
"""
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "DENSEPOSE_KEYS",
    "DENSEPOSE_POINT_KEYS",
    "FINE_TO_COARSE",
    "FINE_PART_NAMES",
    "COARSE_PART_NAMES",
    "DensePoseDataRelative",
    "DensePoseList",
    "DensePoseTransformData",
    "has_densepose",
    "has_densepose_chart",
    "has_densepose_cse",
    "validate_densepose_annotation",
    "decode_dp_masks",
]

DENSEPOSE_POINT_KEYS = ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")
DENSEPOSE_MASK_KEY = "dp_masks"
DENSEPOSE_VERTEX_KEY = "dp_vertex"
DENSEPOSE_MESH_NAME_KEY = "ref_model"
DENSEPOSE_CSE_KEYS = (DENSEPOSE_VERTEX_KEY, DENSEPOSE_MESH_NAME_KEY)
DENSEPOSE_KEYS = DENSEPOSE_POINT_KEYS + (DENSEPOSE_MASK_KEY,) + DENSEPOSE_CSE_KEYS

# Fine parts I = 1..24 (DensePose-COCO). The official documentation groups them as
# "1, 2 = Torso, 3 = Right Hand, 4 = Left Hand, 5 = Left Foot, 6 = Right Foot, 7, 9 = Upper Leg Right,
#  8, 10 = Upper Leg Left, 11, 13 = Lower Leg Right, 12, 14 = Lower Leg Left, 15, 17 = Upper Arm Left,
#  16, 18 = Upper Arm Right, 19, 21 = Lower Arm Left, 20, 22 = Lower Arm Right, 23, 24 = Head";
# the back/front and right/left-face split within a group follows the common community naming.
FINE_PART_NAMES = (
    "background",
    "torso_back", "torso_front",
    "right_hand", "left_hand", "left_foot", "right_foot",
    "upper_leg_right_back", "upper_leg_left_back", "upper_leg_right_front", "upper_leg_left_front",
    "lower_leg_right_back", "lower_leg_left_back", "lower_leg_right_front", "lower_leg_left_front",
    "upper_arm_left_front", "upper_arm_right_front", "upper_arm_left_back", "upper_arm_right_back",
    "lower_arm_left_back", "lower_arm_right_back", "lower_arm_left_front", "lower_arm_right_front",
    "head_right", "head_left",
)  # fmt: skip

# Coarse parts 1..14 = the 14 `dp_masks` (official order).
COARSE_PART_NAMES = (
    "background", "torso", "right_hand", "left_hand", "left_foot", "right_foot",
    "upper_leg_right", "upper_leg_left", "lower_leg_right", "lower_leg_left",
    "upper_arm_left", "upper_arm_right", "lower_arm_left", "lower_arm_right", "head",
)  # fmt: skip

# fine part index (0..24) -> coarse part index (0..14)
FINE_TO_COARSE = (
    0, 1, 1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 8, 9, 10, 11, 10, 11, 12, 13, 12, 13, 14, 14
)  # fmt: skip


def has_densepose_chart(ann: Dict[str, Any]) -> bool:
    """True when an annotation carries DensePose chart points (all of dp_x, dp_y, dp_I, dp_U, dp_V)."""
    return all(ann.get(k) is not None for k in DENSEPOSE_POINT_KEYS)


def has_densepose_cse(ann: Dict[str, Any]) -> bool:
    """True when an annotation carries CSE points (dp_x, dp_y, dp_vertex and ref_model)."""
    return all(ann.get(k) is not None for k in ("dp_x", "dp_y") + DENSEPOSE_CSE_KEYS)


def has_densepose(ann: Dict[str, Any]) -> bool:
    """True when an annotation carries DensePose points: chart (dp_I, dp_U, dp_V) or CSE (dp_vertex,
    ref_model) ones, with dp_x, dp_y (detectron2's validate_annotation: either setting)."""
    return has_densepose_chart(ann) or has_densepose_cse(ann)


def validate_densepose_annotation(ann: Dict[str, Any], where: str = "annotation") -> None:
    """Raise ValueError (prefixed by `where`) if the DensePose fields of `ann` are inconsistent.

    Checks: either all or none of the point keys, equal lengths, I in 1..24, U/V in [0, 1], points
    inside the 256 frame (a small tolerance), `dp_masks` a list of 14 entries each [] or an RLE dict.
    An annotation without any DensePose key is valid (box-only).
    """
    cse = [k for k in DENSEPOSE_CSE_KEYS if ann.get(k) is not None]
    if cse:
        _validate_cse_fields(ann, cse, where)
    present = [k for k in DENSEPOSE_POINT_KEYS if ann.get(k) is not None]
    if cse and present == ["dp_x", "dp_y"]:
        present = []  # a CSE annotation: points without charts
    if present and len(present) != len(DENSEPOSE_POINT_KEYS):
        missing = [k for k in DENSEPOSE_POINT_KEYS if k not in present]
        raise ValueError(f"{where}: has {present} but lacks {missing}")
    if present:
        arrays = {}
        for k in DENSEPOSE_POINT_KEYS:
            try:
                arrays[k] = np.asarray(ann[k], dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: {k} is not a list of numbers ({e})") from e
        lengths = {k: len(a) for k, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{where}: DensePose point arrays have unequal lengths {lengths}")
        if lengths["dp_I"]:
            i = arrays["dp_I"]
            if not np.all(np.isfinite(i)) or i.min() < 1 or i.max() > 24 or np.any(i != np.round(i)):
                raise ValueError(f"{where}: dp_I must be integers in 1..24, got range [{i.min()}, {i.max()}]")
            for k in ("dp_U", "dp_V"):
                a = arrays[k]
                if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
                    raise ValueError(f"{where}: {k} must be in [0, 1], got range [{a.min()}, {a.max()}]")
            for k in ("dp_x", "dp_y"):
                a = arrays[k]
                if not np.all(np.isfinite(a)) or a.min() < -1 or a.max() > 257:
                    raise ValueError(
                        f"{where}: {k} must lie in the 256x256 box frame, got range [{a.min()}, {a.max()}]"
                    )
    masks = ann.get(DENSEPOSE_MASK_KEY)
    if masks is not None and masks != []:
        if not isinstance(masks, (list, tuple)) or len(masks) != DensePoseDataRelative.N_BODY_PARTS:
            n = len(masks) if isinstance(masks, (list, tuple)) else type(masks).__name__
            raise ValueError(f"{where}: dp_masks must be a list of 14 RLE dicts or [], got {n}")
        for k, m in enumerate(masks):
            if m is None or (isinstance(m, (list, tuple)) and len(m) == 0):
                continue
            if not isinstance(m, dict) or "counts" not in m or "size" not in m:
                raise ValueError(f"{where}: dp_masks[{k}] is neither [] nor an RLE dict with size/counts")


def _validate_cse_fields(ann: Dict[str, Any], cse: Sequence[str], where: str) -> None:
    if len(cse) != len(DENSEPOSE_CSE_KEYS):
        missing = [k for k in DENSEPOSE_CSE_KEYS if k not in cse]
        raise ValueError(f"{where}: has {list(cse)} but lacks {missing}")
    name = ann[DENSEPOSE_MESH_NAME_KEY]
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: ref_model must be a mesh name (str), got {name!r}")
    for k in ("dp_x", "dp_y"):
        if ann.get(k) is None:
            raise ValueError(f"{where}: has dp_vertex but lacks {k}")
    try:
        verts = np.asarray(ann[DENSEPOSE_VERTEX_KEY], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: dp_vertex is not a list of numbers ({e})") from e
    if len(verts) != len(np.asarray(ann["dp_x"]).reshape(-1)):
        raise ValueError(f"{where}: dp_vertex has {len(verts)} entries but dp_x {len(np.asarray(ann['dp_x']).reshape(-1))}")
    if len(verts) and (not np.all(np.isfinite(verts)) or verts.min() < 0 or np.any(verts != np.round(verts))):
        raise ValueError(f"{where}: dp_vertex must be 0-based vertex indices (integers >= 0)")
    if ann.get("dp_y") is not None and len(np.asarray(ann["dp_y"]).reshape(-1)) != len(verts):
        raise ValueError(f"{where}: dp_y and dp_vertex have unequal lengths")


def decode_dp_masks(masks: Optional[Sequence[Any]], size: int = 256) -> torch.Tensor:
    """The 14 RLE masks -> (size, size) int64 coarse labels 0..14; later masks overwrite earlier ones."""
    import pycocotools.mask as mask_utils

    segm = np.zeros((size, size), dtype=np.int64)
    if isinstance(masks, dict):  # a single foreground mask
        masks = [masks] if masks else []
    for k, m in enumerate(masks or []):
        if not m:
            continue
        if isinstance(m.get("counts"), str):
            m = {"size": m["size"], "counts": m["counts"].encode("ascii")}
        decoded = mask_utils.decode(m)
        if decoded.shape[:2] != (size, size):
            raise ValueError(f"dp_masks[{k}] decodes to {decoded.shape[:2]}, expected ({size}, {size})")
        segm[decoded > 0] = k + 1
    return torch.from_numpy(segm)


class DensePoseTransformData:
    """Label symmetries and UV symmetry tables used to flip DensePose ground truth horizontally.

    `uv_symmetries` = {"U_transforms": (24, 256, 256) float tensor, "V_transforms": same}; entry
    [p - 1][v_idx, u_idx] is the new u (or v) of a point of fine part p at (u, v).
    """

    # coarse label k -> its mirror (0..14); fine label p -> its mirror (0..24)
    MASK_LABEL_SYMMETRIES = (0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14)
    POINT_LABEL_SYMMETRIES = (
        0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23
    )  # fmt: skip

    def __init__(self, uv_symmetries: Dict[str, torch.Tensor], source: str = ""):
        for key in ("U_transforms", "V_transforms"):
            t = uv_symmetries.get(key)
            if t is None or tuple(t.shape) != (24, 256, 256):
                shape = None if t is None else tuple(t.shape)
                raise ValueError(f"{source or 'UV symmetry data'}: {key} must be (24, 256, 256), got {shape}")
        self.uv_symmetries = {k: uv_symmetries[k].to(torch.float32) for k in ("U_transforms", "V_transforms")}
        self.mask_label_symmetries = torch.tensor(self.MASK_LABEL_SYMMETRIES, dtype=torch.long)
        self.point_label_symmetries = torch.tensor(self.POINT_LABEL_SYMMETRIES, dtype=torch.long)
        self.source = source

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "DensePoseTransformData":
        """Read `UV_symmetry_transforms.mat` (MATLAB cells `U_transforms`, `V_transforms`, each 1 x 24 of
        256 x 256 arrays). Errors name the file."""
        import scipy.io

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"UV symmetry file not found: {path}")
        try:
            data = scipy.io.loadmat(path)
        except Exception as e:  # scipy raises several types for corrupt files
            raise ValueError(f"{path}: cannot read UV symmetry .mat file ({type(e).__name__}: {e})") from e
        out = {}
        for key in ("U_transforms", "V_transforms"):
            if key not in data:
                raise ValueError(f"{path}: no '{key}' variable (found {sorted(k for k in data if not k.startswith('__'))})")
            cells = np.asarray(data[key])
            if cells.dtype != object or cells.size != 24:
                raise ValueError(f"{path}: '{key}' must be a 1x24 cell array, got {cells.dtype} {cells.shape}")
            tables = []
            for idx, cell in enumerate(cells.reshape(-1)):
                arr = np.asarray(cell, dtype=np.float32)
                if arr.shape != (256, 256):
                    raise ValueError(f"{path}: '{key}' cell {idx + 1} is {arr.shape}, expected (256, 256)")
                tables.append(torch.from_numpy(arr))
            out[key] = torch.stack(tables, 0)
        return cls(out, source=path)

    @staticmethod
    def save(path: Union[str, os.PathLike], u_tables: np.ndarray, v_tables: np.ndarray) -> None:
        """Write tables (24, 256, 256) in the official .mat layout (for synthetic data and tests)."""
        import scipy.io

        def cells(t: np.ndarray) -> np.ndarray:
            c = np.empty((1, 24), dtype=object)
            for k in range(24):
                c[0, k] = np.asarray(t[k], dtype=np.float32)
            return c

        scipy.io.savemat(
            os.fspath(path),
            {"U_transforms": cells(u_tables), "V_transforms": cells(v_tables)},
            do_compression=True,
        )

    @staticmethod
    def identity_tables() -> Tuple[np.ndarray, np.ndarray]:
        """(U, V) tables of the identity chart map (u' = u, v' = v), each (24, 256, 256)."""
        grid = np.arange(256, dtype=np.float64) / 255.0
        u = np.broadcast_to(grid[None, None, :], (24, 256, 256)).copy()
        v = np.broadcast_to(grid[None, :, None], (24, 256, 256)).copy()
        return u, v

    def to(self, device) -> "DensePoseTransformData":
        moved = {k: t.to(device) for k, t in self.uv_symmetries.items()}
        return DensePoseTransformData(moved, source=self.source)


class DensePoseDataRelative:
    """One person's DensePose ground truth relative to its box (detectron2's `DensePoseDataRelative`).

    x, y: (K,) float32 points in the 256 box frame; i: (K,) int64 fine parts 1..24; u, v: (K,) float32
    in [0, 1] (None for a CSE-only annotation); vertex_ids: (K,) int64 0-based vertices of mesh
    `mesh_name` (CSE annotations; else None); segm: (256, 256) int64 coarse labels 0..14, or None when the
    annotation has no masks.
    """

    N_BODY_PARTS = 14
    N_PART_LABELS = 24
    MASK_SIZE = 256
    VERTEX_IDS_KEY = DENSEPOSE_VERTEX_KEY
    MESH_NAME_KEY = DENSEPOSE_MESH_NAME_KEY

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        i: Optional[torch.Tensor] = None,
        u: Optional[torch.Tensor] = None,
        v: Optional[torch.Tensor] = None,
        segm: Optional[torch.Tensor] = None,
        vertex_ids: Optional[torch.Tensor] = None,
        mesh_name: Optional[str] = None,
    ):
        self.x = torch.as_tensor(x, dtype=torch.float32).reshape(-1)
        self.y = torch.as_tensor(y, dtype=torch.float32).reshape(-1)
        charts = [t is not None for t in (i, u, v)]
        if any(charts) and not all(charts):
            raise ValueError("DensePose chart points need all of i, u, v")
        if not all(charts) and vertex_ids is None:
            raise ValueError("DensePose data needs chart points (i, u, v) or CSE vertex_ids")
        self.i = None if i is None else torch.as_tensor(i).reshape(-1).round().to(torch.long)
        self.u = None if u is None else torch.as_tensor(u, dtype=torch.float32).reshape(-1)
        self.v = None if v is None else torch.as_tensor(v, dtype=torch.float32).reshape(-1)
        if (vertex_ids is None) != (mesh_name is None):
            raise ValueError("CSE annotations need both vertex_ids and mesh_name")
        if mesh_name is not None and (not isinstance(mesh_name, str) or not mesh_name):
            raise ValueError(f"mesh_name must be a non-empty str, got {mesh_name!r}")
        self.vertex_ids = None
        if vertex_ids is not None:
            vid = torch.as_tensor(vertex_ids)
            if vid.is_floating_point():
                vid = vid.round()
            self.vertex_ids = vid.reshape(-1).to(torch.long)
            if len(self.vertex_ids) and int(self.vertex_ids.min()) < 0:
                raise ValueError("vertex_ids must be >= 0 (0-based mesh vertices)")
        self.mesh_name = mesh_name
        lengths = {"x": len(self.x), "y": len(self.y)}
        for name in ("i", "u", "v", "vertex_ids"):
            t = getattr(self, name)
            if t is not None:
                lengths[name] = len(t)
        if len(set(lengths.values())) != 1:
            raise ValueError(
                "DensePose point arrays have unequal lengths: " + ", ".join(f"{k} {n}" for k, n in lengths.items())
            )
        if segm is not None:
            segm = torch.as_tensor(segm).to(torch.long)
            if tuple(segm.shape) != (self.MASK_SIZE, self.MASK_SIZE):
                raise ValueError(f"segm must be ({self.MASK_SIZE}, {self.MASK_SIZE}), got {tuple(segm.shape)}")
        self.segm = segm

    @classmethod
    def from_annotation(cls, ann: Dict[str, Any], where: str = "annotation") -> "DensePoseDataRelative":
        """Build from a dataset-dict annotation (dp_x, dp_y with dp_I, dp_U, dp_V and / or dp_vertex,
        ref_model; optional dp_masks)."""
        if not has_densepose(ann):
            raise ValueError(
                f"{where}: no DensePose points (needs dp_x, dp_y and dp_I, dp_U, dp_V or dp_vertex, ref_model)"
            )
        validate_densepose_annotation(ann, where)
        masks = ann.get(DENSEPOSE_MASK_KEY)
        segm = decode_dp_masks(masks, cls.MASK_SIZE) if masks else None
        chart = has_densepose_chart(ann)
        cse = has_densepose_cse(ann)
        return cls(
            x=torch.as_tensor(ann["dp_x"], dtype=torch.float32),
            y=torch.as_tensor(ann["dp_y"], dtype=torch.float32),
            i=torch.as_tensor(ann["dp_I"], dtype=torch.float64) if chart else None,
            u=torch.as_tensor(ann["dp_U"], dtype=torch.float32) if chart else None,
            v=torch.as_tensor(ann["dp_V"], dtype=torch.float32) if chart else None,
            segm=segm,
            vertex_ids=torch.as_tensor(np.asarray(ann[DENSEPOSE_VERTEX_KEY], dtype=np.float64)) if cse else None,
            mesh_name=ann[DENSEPOSE_MESH_NAME_KEY] if cse else None,
        )

    @staticmethod
    def validate_annotation(ann: Dict[str, Any]) -> Tuple[bool, Optional[str]]:
        """(True, None) if `ann` can be turned into DensePose data, else (False, reason)."""
        if not has_densepose(ann):
            return False, (
                f"expected either {', '.join(DENSEPOSE_POINT_KEYS)} (IUV setting) or "
                f"dp_x, dp_y, {', '.join(DENSEPOSE_CSE_KEYS)} (CSE setting)"
            )
        try:
            validate_densepose_annotation(ann)
        except ValueError as e:
            return False, str(e)
        return True, None

    @property
    def has_charts(self) -> bool:
        return self.i is not None

    @property
    def mesh_id(self) -> Optional[int]:
        """The catalog id of mesh_name (detectron2 stores this), or None for chart-only data."""
        if self.mesh_name is None:
            return None
        from ..data.meshes import MeshCatalog

        return MeshCatalog.get_mesh_id(self.mesh_name)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def _apply(self, fn) -> "DensePoseDataRelative":
        def opt(t):
            return None if t is None else fn(t)

        return DensePoseDataRelative(
            fn(self.x), fn(self.y), opt(self.i), opt(self.u), opt(self.v), opt(self.segm),
            opt(self.vertex_ids), self.mesh_name,
        )  # fmt: skip

    def to(self, device) -> "DensePoseDataRelative":
        return self._apply(lambda t: t.to(device))

    def clone(self) -> "DensePoseDataRelative":
        return self._apply(lambda t: t.clone())

    def hflip(self, transform_data: Optional[DensePoseTransformData] = None) -> "DensePoseDataRelative":
        """The same person mirrored left-right (a new object; `self` is unchanged). Chart points need the
        UV symmetry tables (`transform_data`); vertex ids map through the mesh's `vertex_transforms`."""
        dev = self.x.device
        x = self.MASK_SIZE - self.x
        i_new = u = v = None
        if self.i is not None:
            if transform_data is None:
                raise RuntimeError("horizontal flip of DensePose chart annotations needs the UV symmetry tables")
            tables = transform_data.uv_symmetries
            i_old = self.i
            i_new = transform_data.point_label_symmetries.to(dev)[i_old]
            u_idx = (self.u * 255).long().clamp(0, 255)
            v_idx = (self.v * 255).long().clamp(0, 255)
            part = (i_old - 1).clamp(0, self.N_PART_LABELS - 1)
            u = tables["U_transforms"].to(dev)[part, v_idx, u_idx].to(torch.float32)
            v = tables["V_transforms"].to(dev)[part, v_idx, u_idx].to(torch.float32)
        vertex_ids = None
        if self.vertex_ids is not None:
            vertex_ids = self._flip_vertices()
        segm = None
        if self.segm is not None:
            labels = (transform_data.mask_label_symmetries if transform_data is not None
                      else torch.tensor(DensePoseTransformData.MASK_LABEL_SYMMETRIES, dtype=torch.long))
            segm = labels.to(dev)[torch.flip(self.segm, [1])]
        return DensePoseDataRelative(x, self.y.clone(), i_new, u, v, segm, vertex_ids, self.mesh_name)

    def _flip_vertices(self) -> torch.Tensor:
        from .mesh import create_mesh

        mesh = create_mesh(self.mesh_name)
        symmetry = mesh.symmetry
        if symmetry is None:
            raise RuntimeError(f"mesh '{self.mesh_name}' has no symmetry file: CSE annotations cannot be flipped")
        transforms = symmetry["vertex_transforms"]
        if len(self.vertex_ids) and int(self.vertex_ids.max()) >= len(transforms):
            raise ValueError(
                f"vertex id {int(self.vertex_ids.max())} out of range for mesh '{self.mesh_name}' "
                f"({len(transforms)} vertices)"
            )
        return transforms.to(self.device)[self.vertex_ids]

    def __repr__(self) -> str:
        kind = "+".join(k for k, t in (("charts", self.i), ("cse:" + str(self.mesh_name), self.vertex_ids)) if t is not None)
        return f"DensePoseDataRelative(num_points={len(self)}, {kind}, has_segm={self.segm is not None})"


class DensePoseList(list):
    """A list (one entry per instance: DensePoseDataRelative or None) that `Instances` can index with
    ints, slices, boolean masks and index tensors."""

    def __getitem__(self, item):  # type: ignore[override]
        if isinstance(item, (int, np.integer)):
            return list.__getitem__(self, int(item))
        if isinstance(item, slice):
            return DensePoseList(list.__getitem__(self, item))
        if isinstance(item, torch.Tensor):
            if item.dtype == torch.bool:
                if item.numel() != len(self):
                    raise IndexError(f"boolean index of length {item.numel()} for a list of {len(self)}")
                item = torch.nonzero(item, as_tuple=False).reshape(-1)
            if item.dim() == 0:
                return list.__getitem__(self, int(item))
            item = item.tolist()
        if isinstance(item, np.ndarray):
            if item.dtype == bool:
                item = np.nonzero(item)[0]
            item = item.tolist()
        return DensePoseList([list.__getitem__(self, int(k)) for k in item])

    def to(self, device) -> "DensePoseList":
        return DensePoseList([None if d is None else d.to(device) for d in self])

    def __repr__(self) -> str:
        return f"DensePoseList({list.__repr__(self)})"

