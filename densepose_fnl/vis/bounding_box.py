"""`bbox`: each person's box (and its score when known)."""
import cv2
import numpy as np

from .base import Visualizer, as_numpy

GREEN = (18, 127, 15)  # detectron2 / Detectron1 box green (BGR)
LIGHT_GRAY = (218, 227, 218)


class BoundingBoxVisualizer(Visualizer):
    needs_charts = False

    def __init__(self, color=GREEN, thickness: int = 2, show_score: bool = True, font_scale: float = 0.5):
        self.color = tuple(int(c) for c in color)
        self.thickness = int(thickness)
        self.show_score = show_score
        self.font_scale = font_scale

    def visualize(self, image_bgr, boxes_xyxy, results=None, scores=None):
        return super().visualize(image_bgr, boxes_xyxy, results, scores)

    def draw(self, image, boxes_xyxy, results, scores) -> None:
        boxes = as_numpy(boxes_xyxy).astype(np.float64).reshape(-1, 4)
        scores_np = None if scores is None else as_numpy(scores).reshape(-1)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            p0, p1 = (int(x0), int(y0)), (int(x1), int(y1))
            cv2.rectangle(image, p0, p1, self.color, self.thickness)
            if self.show_score and scores_np is not None:
                text = f"{float(scores_np[k]):.2f}"
                (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, self.font_scale, 1)
                ty = p0[1] - 3 if p0[1] - th - base - 3 >= 0 else p0[1] + th + 3
                cv2.rectangle(image, (p0[0], ty - th - 2), (p0[0] + tw + 2, ty + base), self.color, -1)
                cv2.putText(image, text, (p0[0] + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, self.font_scale, LIGHT_GRAY, 1, cv2.LINE_AA)
