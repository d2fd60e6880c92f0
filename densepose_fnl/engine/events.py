"""Training metrics: a per-iteration scalar store and its writers (console, metrics.json, TensorBoard),
after detectron2's EventStorage / CommonMetricPrinter / JSONWriter / TensorboardXWriter."""
import datetime
import json
import logging
import os
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np
from fvcore.common.history_buffer import HistoryBuffer

logger = logging.getLogger("densepose_fnl.train")


class EventStorage:
    """Scalars per name (fvcore `HistoryBuffer`s of the last `window_size` values, each with the iteration it
    was put at); `window(name, n)` gives the last n values."""

    def __init__(self, start_iter: int = 0, window_size: int = 20):
        self.iter = start_iter
        self._window = max(window_size, 1)
        self._history: Dict[str, HistoryBuffer] = {}
        self._smoothed = set()

    def put_scalar(self, name: str, value: float, smoothing: bool = True) -> None:
        if name not in self._history:
            self._history[name] = HistoryBuffer(max_length=self._window)
        self._history[name].update(float(value), self.iter)
        if smoothing:
            self._smoothed.add(name)
        else:
            self._smoothed.discard(name)

    def put_scalars(self, smoothing: bool = True, **kwargs: float) -> None:
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing)

    def latest(self) -> Dict[str, Tuple[float, int]]:
        return {k: h.values()[-1] for k, h in self._history.items()}

    def window(self, name: str, n: Optional[int] = None) -> List[float]:
        values = [v for v, _ in self._history[name].values()] if name in self._history else []
        return values if n is None else values[-n:]

    def median(self, name: str, n: int) -> float:
        return float(self._history[name].median(n))

    def avg(self, name: str, n: int) -> float:
        return float(self._history[name].avg(n))

    def latest_with_smoothing(self, n: int) -> Dict[str, Tuple[float, int]]:
        """Latest value of each scalar, the median of the last n for smoothed ones (losses)."""
        return {k: ((self.median(k, n) if k in self._smoothed else v), it) for k, (v, it) in self.latest().items()}


class JSONWriter:
    """Appends one JSON object per call to `path`: {"iteration": i, <scalar>: value, ...} for the scalars
    put since the previous call (losses smoothed over the window)."""

    def __init__(self, path: str, window_size: int = 20):
        self.path, self.window_size = path, window_size
        self._last_written = -1

    def write(self, storage: EventStorage) -> None:
        by_iter: Dict[int, Dict[str, float]] = defaultdict(dict)
        for k, (v, it) in storage.latest_with_smoothing(self.window_size).items():
            if it > self._last_written:
                by_iter[it][k] = v
        if not by_iter:
            return
        with open(self.path, "a") as f:
            for it in sorted(by_iter):
                f.write(json.dumps({"iteration": it, **by_iter[it]}, sort_keys=True) + "\n")
            f.flush()
        self._last_written = max(by_iter)


class TensorboardWriter:
    """TensorBoard event files in `log_dir` (skipped with a warning if tensorboard is unavailable)."""

    def __init__(self, log_dir: str, window_size: int = 20):
        self.window_size = window_size
        self._last_written = -1
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception as e:  # tensorboard missing or broken: training must still work
            logger.warning("TensorBoard logging disabled: %s", e)
            self._writer = None
            return
        self._writer = SummaryWriter(log_dir)

    def write(self, storage: EventStorage) -> None:
        if self._writer is None:
            return
        newest = self._last_written
        for k, (v, it) in storage.latest_with_smoothing(self.window_size).items():
            if it > self._last_written:
                self._writer.add_scalar(k, v, it)
                newest = max(newest, it)
        self._writer.flush()
        self._last_written = newest

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class ConsolePrinter:
    """One log line: ETA, iteration, losses (median over the window), time per iteration, data time, LR."""

    def __init__(self, max_iter: int, window_size: int = 20):
        self.max_iter, self.window_size = max_iter, window_size

    def write(self, storage: EventStorage) -> None:
        it = storage.iter
        n = self.window_size
        times = storage.window("time", n)
        eta = ""
        if times:
            sec = float(np.median(times)) * (self.max_iter - it - 1)
            storage.put_scalar("eta_seconds", sec, smoothing=False)
            eta = f"eta: {datetime.timedelta(seconds=int(sec))}  "
        losses = "  ".join(f"{k}: {storage.median(k, n):.4g}" for k in sorted(storage.latest())
                           if "loss" in k)
        timing = f"  time: {np.mean(times):.4f}" if times else ""
        data_time = storage.window("data_time", n)
        timing += f"  data_time: {np.mean(data_time):.4f}" if data_time else ""
        lr = storage.latest().get("lr")
        lr_s = f"  lr: {lr[0]:.5g}" if lr else ""
        logger.info(f"{eta}iter: {it}/{self.max_iter}  ({100.0 * (it + 1) / self.max_iter:.0f}%)  {losses}"
                    f"{timing}{lr_s}")
