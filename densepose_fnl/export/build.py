"""The model an export starts from, following MODEL.WEIGHTS: float, QAT-converted int8, or PTQ int8."""
import logging
from typing import Iterable, List, Tuple

from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["build_export_model", "is_qat_checkpoint"]


def is_qat_checkpoint(path: str) -> bool:
    """Whether `path` was written by `train_net.py --qat` (its model entries are the captured QAT graphs'),
    read safely (no code from the file runs)."""
    from ..checkpoint.formats import load_checkpoint_file

    state_dict = load_checkpoint_file(path).get("model", {})
    return any(".gm." in k or k.startswith("backbone.gm") for k in state_dict)


def build_export_model(cfg, int8: bool, calib_inputs: List[List[dict]], log: logging.Logger = logger
                       ) -> Tuple[nn.Module, str]:
    """(eval model to export, a description of its kind).

    MODEL.WEIGHTS a float checkpoint: the float model, or with `int8` its post-training quantization
    calibrated on `calib_inputs` (batches of model inputs); a QAT checkpoint: converted as trained (needs
    `int8`); no MODEL.WEIGHTS: random init with BN statistics calibrated on `calib_inputs`."""
    from ..checkpoint import DensePoseCheckpointer
    from ..modeling import build_model
    from ..utils.bn_calibration import calibrate_batchnorm

    model = build_model(cfg).eval()
    weights = cfg.MODEL.WEIGHTS
    qat_ckpt = bool(weights) and is_qat_checkpoint(weights)
    if weights and not qat_ckpt:
        DensePoseCheckpointer(model).load(weights)
    elif not weights:
        log.warning("No MODEL.WEIGHTS: random init, BN statistics calibrated on the calibration images")
        calibrate_batchnorm(model, lambda: (model(b) for b in calib_inputs))
    if qat_ckpt:
        if not int8:
            raise ValueError(f"{weights} is a QAT checkpoint: export it with --int8")
        from ..quantization import build_qat_model, convert_qat_model

        qat = build_qat_model(cfg, model)
        DensePoseCheckpointer(qat).load(weights)
        return convert_qat_model(qat), "int8 (QAT checkpoint)"
    if int8:
        from ..quantization import build_ptq_model

        return build_ptq_model(cfg, model, calib_inputs), "int8 (post-training quantization)"
    return model, "float32"
