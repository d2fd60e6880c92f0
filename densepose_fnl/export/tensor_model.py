"""Tensor-only inference of GeneralizedRCNN for export: one image tensor in, tensors out.

Nothing here re-implements the model: it calls the same functions as eager inference, for one image,
with the image size as symbolic 0-d tensors. What is specific to a graph is only the glue:

* the input is one (1, 3, H, W) uint8 / float image in INPUT.FORMAT, already resized
  (`data.preprocess.preprocess_bgr_image` runs outside the graph, as before the eager model);
* `normalize_and_pad` (meta_arch) -> backbone -> `RPN.predictions` + `RPN.select_proposals` ->
  `DensePoseROIHeads.detect_single_image` (-> `FastRCNNOutputLayers.inference_single_image`) ->
  `DensePoseROIHeads.densepose_predictions`;
* the outputs are tuples of tensors instead of `Instances`.

A quantized model is exported by the same path: its dense sub-modules are swapped in place
(`quantization`), the glue above is unchanged.

Outputs (R = number of detections, S = HEATMAP_SIZE), boxes in the coordinates of the input tensor:
  boxes (R, 4) float XYXY, scores (R,) float, classes (R,) int64,
  coarse_segm (R, 2|15, S, S), fine_segm (R, 25, S, S), u (R, 25, S, S), v (R, 25, S, S) float logits /
  chart coordinates, exactly the fields of `DensePoseChartPredictorOutput`;
  then, for a model with chart confidences (WC1 / WC2 / WC1M / WC2M), the confidence maps its predictor
  outputs, in `CONFIDENCE_NAMES` order: sigma_2 (R, 25, S, S) [, kappa_u, kappa_v (R, 25, S, S)] raw, and
  fine_segm_confidence, coarse_segm_confidence (R, 1, S, S) (the segmentation logits above are already
  multiplied by them), the fields of `DensePoseChartPredictorOutputWithConfidences`.
  `output_names(model)` lists a model's outputs (the predictor's `output_names` after the box outputs).
A CSE model (DensePoseEmbeddingPredictor) outputs, after the box outputs, the fields of
`DensePoseEmbeddingPredictorOutput` (`EMBEDDING_OUTPUT_NAMES`): embedding (R, D, S, S) float, not normalised,
and coarse_segm (R, 2, S, S) logits. Its mesh vertex embeddings are not in the graph: they are written beside
it (`export.vertex_embeddings`), and the pixel -> vertex matching (`postprocess.closest_vertices`) runs after
the graph (`OrtPredictor.cse_results`), as after the eager model (`CseResultsConverter`).
Mapping the boxes back to the original image and turning the maps into per-person labels / UV
(`postprocess.densepose_chart_results`) stay outside the graph (`export.OrtPredictor`), as after the
eager model (`detector_postprocess`).
"""
import torch
from torch import nn

from ..modeling.meta_arch import normalize_and_pad
from ..structures.densepose_outputs import EMBEDDING_NAMES

OUTPUT_NAMES = ("boxes", "scores", "classes", "coarse_segm", "fine_segm", "u", "v")
DETECTION_NAMES = OUTPUT_NAMES[:3]
EMBEDDING_OUTPUT_NAMES = DETECTION_NAMES + EMBEDDING_NAMES  # DensePoseEmbeddingPredictor.output_names


def output_names(model: nn.Module) -> tuple:
    """The graph outputs of `model` (GeneralizedRCNN with DensePose): OUTPUT_NAMES, then its confidences."""
    return DETECTION_NAMES + tuple(model.roi_heads.densepose_predictor.output_names)


def is_cse_model(model: nn.Module) -> bool:
    """Whether `model`'s DensePose predictor is the CSE one (outputs `EMBEDDING_OUTPUT_NAMES`)."""
    predictor = getattr(model.roi_heads, "densepose_predictor", None)
    return predictor is not None and tuple(predictor.output_names) == EMBEDDING_NAMES


class DensePoseTensorModel(nn.Module):
    """`forward(image (1, 3, H, W)) -> (boxes, scores, classes, coarse_segm, fine_segm, u, v[, confidences])`
    (a CSE model: `(boxes, scores, classes, embedding, coarse_segm)`), named by `output_names`.

    `model` is an eval-mode GeneralizedRCNN with DensePose on (float, or with quantized sub-modules)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not getattr(model.roi_heads, "densepose_on", False):
            raise ValueError("Export needs MODEL.DENSEPOSE_ON")
        self.model = model
        self.output_names = output_names(model)

    def forward(self, image: torch.Tensor):
        model = self.model
        rpn, roi = model.proposal_generator, model.roi_heads
        x = normalize_and_pad([image[0]], model.pixel_mean, model.pixel_std, model.backbone.size_divisibility)
        # the unpadded image size as float scalars computed from the (symbolic) input shape
        h = torch.ones((), dtype=torch.float32) * image.shape[-2]
        w = torch.ones((), dtype=torch.float32) * image.shape[-1]
        features = model.backbone(x)
        rpn_features = [features[f] for f in rpn.in_features]
        logits, deltas = rpn.predictions(rpn_features)
        proposals, _ = rpn.select_proposals(rpn_features, [t[0] for t in logits], [t[0] for t in deltas], h, w)
        roi_features = [features[f] for f in roi.in_features]
        boxes, scores, classes = roi.detect_single_image(roi_features, proposals, h, w)
        return (boxes, scores, classes) + roi.densepose_predictions(roi_features, [boxes])
