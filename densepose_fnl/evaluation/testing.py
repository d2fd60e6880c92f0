"""Evaluation results as tables and flat scalar names (detectron2's evaluation/testing.py)."""
import logging
from typing import Any, Dict

logger = logging.getLogger(__name__)

__all__ = ["flatten_results", "print_results_tables", "verify_results"]


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


def verify_results(cfg, results: Dict[str, Dict[str, Dict[str, float]]]) -> bool:
    """TEST.EXPECTED_RESULTS ([[task, metric, expected, tolerance], ...], detectron2's format) against the
    results of the first dataset: True when every metric is within its tolerance (each miss is logged)."""
    expected = cfg.TEST.EXPECTED_RESULTS
    if not expected:
        return True
    if not results:
        logger.error("TEST.EXPECTED_RESULTS is set but nothing was evaluated")
        return False
    tasks = next(iter(results.values()))
    ok = True
    for task, metric, value, tolerance in expected:
        actual = tasks.get(task, {}).get(metric)
        if actual is None:
            logger.error("TEST.EXPECTED_RESULTS: no result %s/%s", task, metric)
            ok = False
        elif not abs(float(actual) - float(value)) <= float(tolerance):
            logger.error("TEST.EXPECTED_RESULTS: %s/%s = %.4f, expected %.4f +- %.4f", task, metric, actual, value,
                         tolerance)
            ok = False
    if ok:
        logger.info("Results verified against TEST.EXPECTED_RESULTS")
    return ok
