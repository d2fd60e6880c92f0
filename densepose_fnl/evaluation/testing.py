"""Evaluation results as tables and flat scalar names (detectron2's evaluation/testing.py)."""
from typing import Any, Dict

__all__ = ["flatten_results", "print_results_tables"]


def flatten_results(results: Dict[str, Any], prefix: str = "") -> Dict[str, float]:
    """{"ds": {"bbox": {"AP": 1}}} -> {"ds/bbox/AP": 1} (a single dataset drops its name)."""
    out = {}
    for k, v in results.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten_results(v, key))
        else:
            out[key] = float(v)
    return out


def print_results_tables(results: Dict[str, Dict[str, Dict[str, float]]], print_fn=print) -> None:
    """One table per dataset and task (bbox, densepose_gps, ...), values in percent."""
    for ds, tasks in results.items():
        for task, metrics in tasks.items():
            if not isinstance(metrics, dict) or not metrics:
                continue
            names = list(metrics)
            width = max(7, *(len(n) for n in names))
            head = "| " + " | ".join(n.rjust(width) for n in names) + " |"
            sep = "|" + "|".join(":" + "-" * width + ":" for _ in names) + "|"
            row = "| " + " | ".join(f"{metrics[n]:{width}.3f}" for n in names) + " |"
            print_fn(f"{ds} {task}:\n{head}\n{sep}\n{row}")
