from .charts import chart_labels_and_uv, densepose_chart_results, int_box_xywh
from .detections import detector_postprocess

__all__ = ["chart_labels_and_uv", "densepose_chart_results", "detector_postprocess", "int_box_xywh"]
