from .charts import chart_labels_and_uv, densepose_chart_results, int_box_xywh
from .cse import CseResultsConverter, VertexChartMap, closest_vertices, predictor_vertex_embeddings
from .detections import detector_postprocess
from .dump import dump_entry, extract_results, load_dump, save_dump

__all__ = ["CseResultsConverter", "VertexChartMap", "chart_labels_and_uv", "closest_vertices", "densepose_chart_results", "detector_postprocess", "dump_entry", "extract_results",
           "int_box_xywh", "load_dump", "predictor_vertex_embeddings", "save_dump"]
