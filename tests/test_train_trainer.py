"""DefaultTrainer on the tiny config: checkpoints, metrics.json / TensorBoard, seeding, evaluation, CLI."""
import importlib.util
import json
import os

import pytest
import torch

from _train_helpers import REPO, TINY_CONFIG, drop_log_handlers, one_thread, tiny_cfg, tiny_dataset  # noqa: F401

from densepose_fnl.engine import DefaultTrainer, default_setup
from densepose_fnl.solver import lr_at


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tiny_dataset(tmp_path_factory.mktemp("synthetic"))
    old = os.environ.get("DENSEPOSE_SYNTHETIC_ROOT")
    os.environ["DENSEPOSE_SYNTHETIC_ROOT"] = root
    yield root
    if old is None:
        os.environ.pop("DENSEPOSE_SYNTHETIC_ROOT", None)
    else:
        os.environ["DENSEPOSE_SYNTHETIC_ROOT"] = old


def _train_net_cli():
    spec = importlib.util.spec_from_file_location("train_net", REPO / "tools" / "train_net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.cli


def _train(out, *opts, log_period=1):
    cfg = tiny_cfg(out, *opts)
    default_setup(cfg)
    trainer = DefaultTrainer(cfg, log_period=log_period)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    return trainer, results


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def test_training_writes_checkpoints_metrics_and_events(synth, tmp_path):
    out = tmp_path / "run"
    trainer, _ = _train(out, "SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 3, "SEED", 5)
    names = sorted(os.listdir(out))
    # fvcore's PeriodicCheckpointer, as detectron2: every period (the last iteration included), then final
    assert {"model_0000002.pth", "model_0000005.pth", "model_final.pth"} <= set(names)
    assert not any(n.startswith("model_") and n not in ("model_0000002.pth", "model_0000005.pth", "model_final.pth")
                   for n in names)
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert "config.yaml" in names and "log.txt" in names
    ck = torch.load(out / "model_0000002.pth", weights_only=False)
    assert ck["iteration"] == 2 and ck["scheduler"]["last_epoch"] == 3
    assert set(ck) >= {"model", "optimizer", "scheduler", "iteration"}
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["iteration"] == 5
    model_sd = trainer.model.state_dict()
    assert all(torch.equal(model_sd[k], v) for k, v in final["model"].items())
    rows = _metrics(out)
    assert [r["iteration"] for r in rows] == list(range(6))
    for r in rows:
        assert r["lr"] == pytest.approx(lr_at(trainer.cfg, r["iteration"]))
        losses = {k: v for k, v in r.items() if k.startswith("loss_")}
        assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", "loss_densepose_S",
                               "loss_densepose_I", "loss_densepose_U", "loss_densepose_V"}
        assert r["total_loss"] > 0 and "time" in r and "data_time" in r
    # the first row is unsmoothed: total = sum of the losses of iteration 0
    first = rows[0]
    assert first["total_loss"] == pytest.approx(sum(v for k, v in first.items() if k.startswith("loss_")))


def test_same_seed_same_weights_different_seed_different(synth, tmp_path):
    def final_weights(out, seed):
        _train(out, "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 0, "SEED", seed, log_period=10)
        return torch.load(out / "model_final.pth", weights_only=False)["model"]

    a = final_weights(tmp_path / "a", 7)
    b = final_weights(tmp_path / "b", 7)
    c = final_weights(tmp_path / "c", 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_random_seed_is_logged(synth, tmp_path):
    cfg = tiny_cfg(tmp_path, "SEED", -1)
    seed = default_setup(cfg)
    assert seed >= 0
    assert f"random seed {seed}" in (tmp_path / "log.txt").read_text()


def test_periodic_evaluation_and_eval_only_cli(synth, tmp_path, capsys):
    out = tmp_path / "run"
    _, results = _train(out, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 0, "TEST.EVAL_PERIOD", 2,
                        "DATASETS.TEST", "('densepose_synthetic_val',)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
                        log_period=2)
    res = results["densepose_synthetic_val"]
    assert set(res) >= {"bbox", "densepose_gps", "densepose_gpsm"} and "AP50" in res["bbox"]
    evals = [r for r in _metrics(out) if "bbox/AP50" in r]
    assert [r["iteration"] for r in evals] == [1, 3]  # every 2 iterations (the last one included once)
    assert evals[-1]["bbox/AP50"] == pytest.approx(res["bbox"]["AP50"], nan_ok=True)
    # --eval-only on the final weights gives the same numbers and prints the tables
    capsys.readouterr()
    code = _train_net_cli()(["--config-file", TINY_CONFIG, "--eval-only", "MODEL.WEIGHTS", str(out / "model_final.pth"),
                             "OUTPUT_DIR", str(tmp_path / "eval"), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "densepose_synthetic_val bbox:" in stdout and "AP50" in stdout
    assert "densepose_synthetic_val densepose_gps:" in stdout
    with open(tmp_path / "eval" / "eval_results.json") as f:
        again = json.load(f)["densepose_synthetic_val"]
    assert again["bbox"] == pytest.approx(res["bbox"], nan_ok=True)


@pytest.mark.parametrize("case", ["bad_key", "bad_file", "bad_value"])
def test_cli_config_errors_exit_2_without_traceback(synth, tmp_path, case, capsys):
    args = ["--config-file", TINY_CONFIG, "SOLVER.NOT_A_KEY", "1"]
    if case == "bad_file":
        args = ["--config-file", str(tmp_path / "missing.yaml")]
    elif case == "bad_value":
        args = ["--config-file", TINY_CONFIG, "SOLVER.MAX_ITER", "many"]
    code = _train_net_cli()([*args, "OUTPUT_DIR", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and "config error" in err
    key = {"bad_key": "SOLVER.NOT_A_KEY", "bad_file": "missing.yaml", "bad_value": "SOLVER.MAX_ITER"}[case]
    assert key in err
    assert not (tmp_path / "metrics.json").exists()


def test_cli_qat_wraps_the_float_model_after_loading_its_weights(synth, tmp_path, capsys, monkeypatch):
    quantization = pytest.importorskip("densepose_fnl.quantization")
    float_out = tmp_path / "float"
    _train(float_out, "SOLVER.MAX_ITER", 1, "SOLVER.CHECKPOINT_PERIOD", 0, log_period=1)
    flt = torch.load(float_out / "model_final.pth", weights_only=False)["model"]
    seen = {}

    class Wrapped(torch.nn.Module):  # stands in for the fake-quantized model (same training forward API)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, batched_inputs):
            return self.inner(batched_inputs)

    def fake_build_qat_model(cfg, float_model):
        sd = float_model.state_dict()
        seen["loaded"] = all(torch.equal(sd[k], v) for k, v in flt.items())
        return Wrapped(float_model)

    monkeypatch.setattr(quantization, "build_qat_model", fake_build_qat_model)
    out = tmp_path / "qat"
    code = _train_net_cli()(["--config-file", TINY_CONFIG, "--qat", "--log-period", "1",
                             "MODEL.WEIGHTS", str(float_out / "model_final.pth"), "OUTPUT_DIR", str(out),
                             "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "0", "DATASETS.TEST", "()"])
    assert code == 0, capsys.readouterr().err[-3000:]
    assert seen["loaded"] is True
    qat = torch.load(out / "model_final.pth", weights_only=False)
    assert qat["iteration"] == 1 and all(k.startswith("inner.") for k in qat["model"])
    assert [r["iteration"] for r in _metrics(out)] == [0, 1]
