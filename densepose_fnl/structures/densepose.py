"""DensePose result containers: raw predictor outputs per RoI, and per-person chart results."""
from dataclasses import dataclass, fields
from typing import List, Union

import torch


@dataclass
class DensePoseChartPredictorOutput:
    """Raw chart predictor output for N RoIs, each map HEATMAP_SIZE x HEATMAP_SIZE over its box.

    coarse_segm: (N, 2 or 15, S, S) logits (background vs person, or background + 14 coarse parts)
    fine_segm:   (N, 25, S, S) logits (background + 24 fine parts I)
    u, v:        (N, 25, S, S) per-part chart coordinates
    """

    coarse_segm: torch.Tensor
    fine_segm: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor

    def __len__(self) -> int:
        return self.coarse_segm.size(0)

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "DensePoseChartPredictorOutput":
        if isinstance(item, int):
            item = slice(item, item + 1)
        return DensePoseChartPredictorOutput(
            *(getattr(self, f.name)[item] for f in fields(self))
        )

    def to(self, device) -> "DensePoseChartPredictorOutput":
        return DensePoseChartPredictorOutput(*(getattr(self, f.name).to(device) for f in fields(self)))

    @staticmethod
    def cat(outputs: List["DensePoseChartPredictorOutput"]) -> "DensePoseChartPredictorOutput":
        return DensePoseChartPredictorOutput(
            *(torch.cat([getattr(o, f.name) for o in outputs], 0) for f in fields(DensePoseChartPredictorOutput))
        )


@dataclass
class DensePoseChartResult:
    """One person's DensePose over its box (detectron2's `DensePoseChartResult`).

    labels: (H, W) int64 part index, 0 = background, 1..24 = fine parts I
    uv:     (2, H, W) float32 U and V in [0, 1]
    H, W are the box height and width in pixels, truncated to integers as detectron2 does (at least 1).
    """

    labels: torch.Tensor
    uv: torch.Tensor

    def to(self, device) -> "DensePoseChartResult":
        return DensePoseChartResult(labels=self.labels.to(device), uv=self.uv.to(device))
