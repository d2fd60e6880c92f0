"""detectron2 DensePose's builtin meshes (same names and relative file paths as its data/meshes/builtin.py)."""
from .catalog import MeshInfo, register_meshes

BUILTIN_MESH_NAMES = (
    "smpl_27554", "chimp_5029", "cat_5001", "cat_7466", "sheep_5004", "zebra_5002", "horse_5004",
    "giraffe_5002", "elephant_5002", "dog_5002", "dog_7466", "cow_5002", "bear_4936",
)  # fmt: skip


def _builtin(name: str) -> MeshInfo:
    texcoords = "zebra_5002" if name == "horse_5004" else name  # as detectron2: the horse uses the zebra's UVs
    return MeshInfo(
        name=name,
        data=f"{name}.pkl",
        geodists=f"geodists/geodists_{name}.pkl",
        symmetry=f"symmetry/symmetry_{name}.pkl",
        texcoords=f"texcoords/texcoords_{texcoords}.pkl",
    )


MESHES = [_builtin(name) for name in BUILTIN_MESH_NAMES]

register_meshes(MESHES)
