"""Ground-truth to prediction matching and foreground/background subsampling (detectron2 semantics)."""
from typing import List, Tuple

import torch


class Matcher:
    """Each prediction (column of an IoU matrix G x P) gets its best ground truth and a label by
    thresholds: IoU < t0 -> labels[0], t0 <= IoU < t1 -> labels[1], ... With `allow_low_quality_matches`,
    predictions that are the best match of some ground truth are promoted to positive."""

    def __init__(self, thresholds: List[float], labels: List[int], allow_low_quality_matches: bool = False):
        thresholds = list(thresholds)
        assert thresholds[0] > 0 and all(a <= b for a, b in zip(thresholds[:-1], thresholds[1:]))
        assert len(labels) == len(thresholds) + 1
        self.thresholds = [-float("inf")] + thresholds + [float("inf")]
        self.labels = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if match_quality_matrix.numel() == 0:
            n = match_quality_matrix.size(1)
            default_matches = match_quality_matrix.new_full((n,), 0, dtype=torch.int64)
            default_labels = match_quality_matrix.new_full((n,), self.labels[0], dtype=torch.int8)
            return default_matches, default_labels
        matched_vals, matches = match_quality_matrix.max(dim=0)
        match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            low_high = (matched_vals >= low) & (matched_vals < high)
            match_labels[low_high] = label
        if self.allow_low_quality_matches:
            highest, _ = match_quality_matrix.max(dim=1)
            _, pred_inds = torch.nonzero(match_quality_matrix == highest[:, None], as_tuple=True)
            match_labels[pred_inds] = 1
        return matches, match_labels


def subsample_labels(labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random subset of at most `num_samples` indices with at most `positive_fraction` positives.
    labels: -1 ignore, bg_label background, anything else foreground."""
    positive = torch.nonzero((labels != -1) & (labels != bg_label)).squeeze(1)
    negative = torch.nonzero(labels == bg_label).squeeze(1)
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    perm1 = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    perm2 = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[perm1], negative[perm2]
