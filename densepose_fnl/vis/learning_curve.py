"""Learning curve of a training run: losses and evaluation AP vs iteration, from OUTPUT_DIR/metrics.json.

    from densepose_fnl.vis.learning_curve import read_metrics, plot_learning_curve
    plot_learning_curve("output/demo/metrics.json", "output/demo/vis/learning_curve.png")

metrics.json holds one JSON object per line ({"iteration": i, "total_loss": ..., "bbox/AP": ...}, the
evaluation keys on the rows of the iterations evaluated, see `engine.hooks.EvalHook`). The plot (matplotlib,
Agg backend) has the total loss and the DensePose losses on the left, and on the right the AP of each
evaluated task (box, DensePose GPS / GPSm / IOU) at the iterations it was evaluated.
"""
import json
from typing import Dict, List, Optional, Sequence, Tuple

# (metrics.json key, legend) of the APs drawn, in this order
AP_KEYS: Tuple[Tuple[str, str], ...] = (
    ("bbox/AP", "box AP"),
    ("densepose_gps/AP", "DensePose GPS AP"),
    ("densepose_gpsm/AP", "DensePose GPSm AP"),
    ("densepose_segm/AP", "DensePose IOU AP"),
)
LOSS_KEYS: Tuple[Tuple[str, str], ...] = (
    ("total_loss", "total loss"),
    ("loss_densepose_S", "DensePose S (coarse segm.)"),
    ("loss_densepose_I", "DensePose I (parts)"),
    ("loss_densepose_U", "DensePose U"),
    ("loss_densepose_V", "DensePose V"),
)


def read_metrics(path: str) -> List[Dict[str, float]]:
    """The rows of a metrics.json file (unparsable lines, e.g. a torn last line, are skipped); when a run
    was resumed the later rows of an iteration replace the earlier ones."""
    rows: Dict[int, Dict[str, float]] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "iteration" in row:
                rows.setdefault(int(row["iteration"]), {}).update(row)
    return [rows[k] for k in sorted(rows)]


def series(rows: Sequence[Dict[str, float]], key: str) -> Tuple[List[int], List[float]]:
    """(iterations, values) of the rows that have `key`; iterations are 1-based counts of iterations done."""
    its = [int(r["iteration"]) + 1 for r in rows if key in r]
    return its, [float(r[key]) for r in rows if key in r]


def ap_table(rows: Sequence[Dict[str, float]]) -> List[Dict[str, float]]:
    """One dict per evaluated iteration: {"iteration": n done, "<legend>": AP, ...}."""
    out = []
    for r in rows:
        aps = {label: float(r[k]) for k, label in AP_KEYS if k in r}
        if aps:
            out.append({"iteration": int(r["iteration"]) + 1, **aps})
    return out


def plot_learning_curve(metrics_path: str, output_path: str, title: Optional[str] = None, dpi: int = 100) -> str:
    """Write the learning-curve PNG of `metrics_path` to `output_path`; returns output_path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    if not rows:
        raise ValueError(f"{metrics_path}: no metrics rows")
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=dpi)
    for key, label in LOSS_KEYS:
        its, vals = series(rows, key)
        if its:
            ax_loss.plot(its, vals, label=label, lw=2.0 if key == "total_loss" else 1.2)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss (smoothed over the log period)")
    ax_loss.set_yscale("log")
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_loss.set_title("training losses")
    any_ap = False
    for key, label in AP_KEYS:
        its, vals = series(rows, key)
        if its:
            any_ap = True
            ax_ap.plot(its, vals, marker="o", label=label)
            ax_ap.annotate(f"{vals[-1]:.1f}", (its[-1], vals[-1]), textcoords="offset points", xytext=(4, 0),
                           fontsize=8, va="center")
    ax_ap.set_xlabel("iteration")
    ax_ap.set_ylabel("AP (%) on the validation set")
    ax_ap.set_ylim(0, 100)
    ax_ap.grid(True, alpha=0.3)
    if any_ap:
        ax_ap.legend(fontsize=8, loc="upper left")
    else:
        ax_ap.text(0.5, 0.5, "no evaluation in metrics.json", ha="center", va="center", transform=ax_ap.transAxes)
    ax_ap.set_title("validation AP at the evaluated checkpoints")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output_path)
    plt.close(fig)
    return output_path


__all__ = ["AP_KEYS", "LOSS_KEYS", "ap_table", "plot_learning_curve", "read_metrics", "series"]
