"""Compare two predictors' Instances (e.g. ONNX Runtime vs PyTorch): detections, part labels and U / V; for CSE
models detections, embeddings and mesh vertex maps (`compare_instances(..., cse=converter)`)."""
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from ..postprocess import densepose_chart_results
from ..structures import DensePoseEmbeddingPredictorOutput


@dataclass
class ComparisonReport:
    num_ref: int
    num_other: int
    min_box_iou: float  # over reference detections, IoU with the matched (same index) detection
    max_score_diff: float
    label_agreement: float  # fraction of box pixels whose part label (0 = background) is the same
    max_uv_diff: float  # max |dU|, |dV| over pixels where both give the same non-background part
    # chart confidences (both with them): max difference of any confidence map over the pixels where both give
    # the same part (per-part ones: the same non-background part); 0 for models without confidences
    max_confidence_diff: float = 0.0
    # CSE (compared with a converter): label_agreement is the fraction of box pixels with the same mesh vertex
    # (-1 = background), max_uv_diff stays 0; max |d embedding| and max |d coarse_segm| over the maps
    cse: bool = False
    max_embedding_diff: float = 0.0
    max_coarse_segm_diff: float = 0.0
    box_iou_thresh: float = 0.99
    label_thresh: float = 0.99
    uv_thresh: float = 0.01

    def ok(self) -> bool:
        return (self.num_ref == self.num_other and self.min_box_iou > self.box_iou_thresh
                and self.label_agreement >= self.label_thresh and self.max_uv_diff < self.uv_thresh)

    def summary(self) -> str:
        if self.cse:
            return (f"{self.num_other}/{self.num_ref} detections, min box IoU {self.min_box_iou:.4f}, "
                    f"max |dscore| {self.max_score_diff:.2e}, max |dembedding| {self.max_embedding_diff:.2e}, "
                    f"max |dcoarse_segm| {self.max_coarse_segm_diff:.2e}, mesh vertices agree on "
                    f"{100 * self.label_agreement:.2f}% of pixels -> {'OK' if self.ok() else 'DIFFERENT'}")
        return (f"{self.num_other}/{self.num_ref} detections, min box IoU {self.min_box_iou:.4f}, "
                f"max |dscore| {self.max_score_diff:.2e}, part labels agree on {100 * self.label_agreement:.2f}% "
                f"of pixels, max |dU|,|dV| {self.max_uv_diff:.2e}"
                + (f", max |dconfidence| {self.max_confidence_diff:.2e}" if self.max_confidence_diff else "")
                + f" -> {'OK' if self.ok() else 'DIFFERENT'}")


def compare_instances(ref, other, cse=None) -> ComparisonReport:
    """Detections are matched by index (both predictors sort by score); DensePose maps are compared on
    the reference boxes' pixels after the usual chart post-processing of each result on its own box.
    CSE Instances (pred_densepose = DensePoseEmbeddingPredictorOutput) need `cse`, the `CseResultsConverter`
    (e.g. `OrtPredictor.cse_converter()`): the vertex maps of both on the reference boxes are compared."""
    n, m = len(ref), len(other)
    k = min(n, m)
    is_cse = k > 0 and isinstance(ref.pred_densepose, DensePoseEmbeddingPredictorOutput)
    if k == 0:
        return ComparisonReport(n, m, 1.0 if n == m else 0.0, 0.0, 1.0 if n == m else 0.0, 0.0)
    iou = box_iou(ref.pred_boxes[:k].float(), other.pred_boxes[:k].float()).diagonal()
    score_diff = (ref.scores[:k] - other.scores[:k]).abs().max().item()
    if is_cse:
        if cse is None:
            raise ValueError("compare_instances: CSE outputs are compared by their vertex maps; pass cse= a "
                             "CseResultsConverter (e.g. OrtPredictor.cse_converter())")
        classes = ref.pred_classes[:k] if ref.has("pred_classes") else None
        va = cse(ref.pred_boxes[:k], ref.pred_densepose[:k], classes)
        vb = cse(ref.pred_boxes[:k], other.pred_densepose[:k], classes)
        agree = sum(int((a.vertices == b.vertices).sum()) for a, b in zip(va, vb))
        total = sum(a.vertices.numel() for a in va)
        da, db = ref.pred_densepose[:k], other.pred_densepose[:k]
        return ComparisonReport(n, m, iou.min().item(), score_diff, agree / max(total, 1), 0.0, cse=True,
                                max_embedding_diff=(da.embedding - db.embedding).abs().max().item(),
                                max_coarse_segm_diff=(da.coarse_segm - db.coarse_segm).abs().max().item())
    # same integer box for both so the maps are resized identically (differences are then the maps')
    res_a = densepose_chart_results(ref.pred_boxes[:k], ref.pred_densepose[:k])
    res_b = densepose_chart_results(ref.pred_boxes[:k], other.pred_densepose[:k])
    agree, total, uv, conf = 0, 0, 0.0, 0.0
    for a, b in zip(res_a, res_b):
        same = a.labels == b.labels
        agree += int(same.sum())
        total += same.numel()
        fg = same & (a.labels > 0)
        if fg.any():
            uv = max(uv, (a.uv - b.uv).abs()[:, fg].max().item())
        conf_b = b.confidences()
        for name, ca in a.confidences().items():
            where = fg if name in ("sigma_1", "sigma_2", "kappa_u", "kappa_v") else same
            if name in conf_b and where.any():
                conf = max(conf, (ca - conf_b[name]).abs()[where].max().item())
    return ComparisonReport(n, m, iou.min().item(), score_diff, agree / max(total, 1), uv, max_confidence_diff=conf)
