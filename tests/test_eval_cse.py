"""The dataset evaluator in CSE mode records per detection only the vertices at its image's GT points and
a mask RLE (no float embeddings), and scores exactly as DensePoseCocoEval on detectron2's raw CSE result
dicts (the path the oracle test holds equal to the official evaluator); the model's embedder is picked up
by inference_on_dataset; results files carry the records."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from densepose_fnl.data.meshes import MeshCatalog, MeshInfo
from densepose_fnl.evaluation.densepose_coco_eval import evaluate_densepose
from densepose_fnl.evaluation.evaluator import DensePoseCOCOEvaluator, inference_on_dataset, load_coco
from densepose_fnl.evaluation.synthetic_mesh import (
    coco_dataset,
    densepose_annotation,
    make_synthetic_mesh,
    mesh_file_names,
    write_mesh_files,
)
from densepose_fnl.structures import Instances

MESH = "test_eval_cse_body"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("cse_eval")
    body = make_synthetic_mesh(grid=4)
    write_mesh_files(body, d, MESH)
    MeshCatalog[MESH] = MeshInfo(MESH, **mesh_file_names(MESH), data_dir=str(d))
    rng = np.random.RandomState(0)
    images = [{"id": k, "width": 160, "height": 120, "file_name": f"{k}.jpg"} for k in (1, 2)]
    anns = []
    for k, (img, box) in enumerate([(1, [10.0, 10.0, 60.0, 90.0]), (1, [80.0, 15.0, 50.0, 80.0]),
                                    (2, [30.5, 20.0, 70.0, 95.0])]):
        n = 30
        pts = np.stack([rng.uniform(0, 255, n), rng.uniform(0, 255, n), rng.randint(1, 25, n).astype(float),
                        rng.uniform(0, 1, n), rng.uniform(0, 1, n)], 1)
        a = densepose_annotation(k + 1, img, box, pts)
        a["dp_vertex"] = body.nearest_vertices(a["dp_I"], a["dp_U"], a["dp_V"]).tolist()
        a["ref_model"] = MESH
        anns.append(a)
    gt = coco_dataset(images, anns)
    vert_emb = torch.from_numpy(np.concatenate([body.vertices * 10, rng.normal(0, 0.02, (body.num_vertices, 3))],
                                               1).astype(np.float32))
    dets = []  # per image: boxes (xyxy), scores, coarse_segm (N, 2, 24, 24), embedding (N, 6, 24, 24)
    for img in (1, 2):
        mine = [a for a in anns if a["image_id"] == img]
        boxes, segm, emb = [], [], []
        for a in mine + [None]:
            box = [a["bbox"][0] + 1.5, a["bbox"][1] - 1.0, a["bbox"][2] + 2.0, a["bbox"][3]] if a else [5.0, 60.0, 40.0, 50.0]
            boxes.append([box[0], box[1], box[0] + box[2], box[1] + box[3]])
            s = torch.zeros(2, 24, 24)
            s[1, 1:23, 1:23] = 1.0
            e = torch.randn(6, 24, 24) * 0.3
            if a:  # every cell: the embedding of the nearest GT point's vertex (+ noise)
                xy = torch.tensor([a["dp_x"], a["dp_y"]]).t() * 24 / 256
                gy, gx = torch.meshgrid(torch.arange(24) + 0.5, torch.arange(24) + 0.5, indexing="ij")
                near = ((torch.stack([gx, gy], -1)[..., None, :] - xy) ** 2).sum(-1).argmin(-1)
                e = vert_emb[torch.tensor(a["dp_vertex"])[near]].permute(2, 0, 1) + 0.02 * torch.randn(6, 24, 24)
            segm.append(s)
            emb.append(e)
        dets.append((torch.tensor(boxes), torch.linspace(0.9, 0.5, len(boxes)), torch.stack(segm), torch.stack(emb)))
    return gt, dets, vert_emb


class _EmbeddingOutput:
    """Stands for the predictor's DensePoseEmbeddingPredictorOutput (detectron2's fields)."""

    def __init__(self, coarse_segm, embedding):
        self.coarse_segm, self.embedding = coarse_segm, embedding

    def __len__(self):
        return len(self.coarse_segm)

    def to(self, device):
        return self


class _Model(torch.nn.Module):
    def __init__(self, dets, vert_emb):
        super().__init__()
        self.dets = dets
        self.roi_heads = SimpleNamespace(embedder=lambda name: vert_emb if name == MESH else None)

    def forward(self, inputs):
        outs = []
        for inp in inputs:
            boxes, scores, segm, emb = self.dets[inp["image_id"] - 1]
            inst = Instances((120, 160))
            inst.pred_boxes = boxes
            inst.scores = scores
            inst.pred_classes = torch.zeros(len(boxes), dtype=torch.long)
            inst.pred_densepose = _EmbeddingOutput(segm, emb)
            outs.append({"instances": inst})
        return outs


def test_recorded_cse_evaluation_equals_raw_and_is_light(scene, tmp_path):
    gt, dets, vert_emb = scene
    ev = DensePoseCOCOEvaluator(gt, output_dir=tmp_path, evaluator_type="cse")
    res = inference_on_dataset(_Model(dets, vert_emb), [[{"image_id": 1}], [{"image_id": 2}]], ev)
    assert ev.embedder is not None  # picked up from model.roi_heads.embedder
    for p in ev._predictions:  # no float maps kept: int32 vertices per GT point and an RLE
        assert "embedding" not in p and "coarse_segm" not in p
        assert all(v.dtype == np.int32 for v in p["cse_vertices"].values())
    raw = []
    for img, (boxes, scores, segm, emb) in zip((1, 2), dets):
        for k in range(len(boxes)):
            x0, y0, x1, y1 = boxes[k].tolist()
            raw.append({"image_id": img, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": float(scores[k]), "coarse_segm": segm[k], "embedding": emb[k]})
    expect = evaluate_densepose(load_coco(gt), raw, None, vertex_embeddings=lambda n: vert_emb,
                                print_fn=lambda s: None)
    for key in ("densepose_gps", "densepose_gpsm", "densepose_segm"):
        assert res[key] == pytest.approx(expect[key], abs=1e-9)
    assert 30 < res["densepose_gps"]["AP"] <= 100
    # the written results carry the records and score the same again
    written = json.loads((tmp_path / "coco_densepose_results.json").read_text())
    again = evaluate_densepose(load_coco(gt), written, None, print_fn=lambda s: None)
    assert again["densepose_gps"] == pytest.approx(res["densepose_gps"], abs=1e-9)


def test_cse_results_without_embedder_fail_clearly(scene):
    gt, dets, _ = scene
    ev = DensePoseCOCOEvaluator(gt, evaluator_type="cse")
    model = _Model(dets, None)
    model.roi_heads = SimpleNamespace()
    with pytest.raises(ValueError, match="vertex embedder"):
        inference_on_dataset(model, [[{"image_id": 1}]], ev)
