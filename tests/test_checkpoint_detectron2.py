"""Loading checkpoints written by the authors' detectron2 implementation (DensePoseFnL): layout, formats,
strictness, conversion tool, ImageNet backbone weights."""
import logging
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from densepose_fnl.checkpoint import (
    CheckpointLoadError, CheckpointMismatchError, DensePoseCheckpointer, authors_b_config, load_checkpoint,
    load_timm_backbone_weights,
)
from densepose_fnl.modeling import build_model

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
REF_TSV = SHARED / "reference" / "authors_mobile_parsing_rcnn_b_state_dict_keys.tsv"
REF_YAML = SHARED / "reference" / "authors_configs" / "mobile_parsing_rcnn_b_s3x.yaml"
FIXTURE = REPO / "tests" / "fixtures" / "checkpoint_mobile_parsing_rcnn_b_state_dict.txt"
DTYPES = {"torch.float32": torch.float32, "torch.int64": torch.int64}


def read_layout(path: Path):
    """name -> (shape, dtype) from a 'name<TAB>(shape)<TAB>dtype' list ('#' lines are comments)."""
    layout = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape, dtype = line.split("\t")
        layout[name] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), DTYPES[dtype])
    return layout


def synthetic_state_dict(layout, seed: int = 0):
    """Random values with exactly the names / shapes / dtypes of `layout` (no value equals an init value)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (shape, dtype) in layout.items():
        if dtype.is_floating_point:
            sd[name] = torch.rand(shape, generator=g) + 0.5  # positive: valid BN variances too
        else:
            sd[name] = torch.randint(1, 1000, shape, generator=g, dtype=dtype)
    return sd


@pytest.fixture(scope="module")
def layout():
    return read_layout(FIXTURE)


@pytest.fixture()
def model():
    return build_model(authors_b_config()).eval()


def _assert_all_from(model, sd):
    ours = model.state_dict()
    assert set(ours) == set(sd)
    differing = [k for k, v in ours.items() if not torch.equal(v, sd[k].to(v.dtype))]
    assert not differing, f"entries not loaded from the checkpoint: {differing[:10]}"


# ---------------------------------------------------------------- layout
def test_fixture_is_our_model_layout(layout, model):
    ours = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    assert len(ours) == 503
    assert ours == layout
    assert list(ours) == list(layout)  # same order as the authors' model too (see next test)


def test_fixture_equals_authors_layout(layout):
    if not REF_TSV.is_file():
        pytest.skip("shared reference TSV not available")
    ref = read_layout(REF_TSV)
    assert len(ref) == 503
    assert list(ref.items()) == list(layout.items())


def test_authors_b_config_equals_authors_yaml():
    if not REF_YAML.is_file():
        pytest.skip("shared authors' configs not available")
    from densepose_fnl.config import load_config

    theirs = load_config(str(REF_YAML), ["MODEL.TIMMNETS.PRETRAINED", "False"])
    ours = authors_b_config()
    assert ours.MODEL == theirs.MODEL
    assert ours.INPUT == theirs.INPUT


# ---------------------------------------------------------------- acceptance: detectron2-format checkpoint
def test_detectron2_checkpoint_loads_every_entry(tmp_path, layout, model):
    sd = synthetic_state_dict(layout)
    path = tmp_path / "model_final.pth"
    torch.save({"model": sd, "__author__": "DensePoseFnL", "iteration": 389999}, path)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    checkpointer = DensePoseCheckpointer(model)
    extra = checkpointer.load(str(path))
    _assert_all_from(model, sd)
    assert all(not torch.equal(init[k], v) for k, v in model.state_dict().items()), "an entry kept its init"
    report = checkpointer.last_load_report
    assert report.ok and len(report.loaded) == 503 and not report.filled
    assert extra["iteration"] == 389999  # non-model entries are handed back, as fvcore does


def test_reference_tsv_checkpoint_loads(tmp_path, model):
    if not REF_TSV.is_file():
        pytest.skip("shared reference TSV not available")
    sd = synthetic_state_dict(read_layout(REF_TSV), seed=1)
    torch.save({"model": sd, "__author__": "DensePoseFnL"}, tmp_path / "m.pth")
    load_checkpoint(model, str(tmp_path / "m.pth"))
    _assert_all_from(model, sd)


def test_variations_ddp_prefix_numpy_pkl_frozenbn_without_counter_legacy_buffers(tmp_path, layout, model):
    sd = synthetic_state_dict(layout, seed=2)
    # detectron2 model-zoo style .pkl: numpy arrays, 'module.' prefix, FrozenBN without num_batches_tracked
    # (detectron2's FrozenBatchNorm2d has no such buffer), and old-detectron2 persistent buffers
    frozen_counters = [k for k in sd if k.startswith("backbone.bottom_up.") and k.endswith("num_batches_tracked")]
    assert len(frozen_counters) == 63
    d2 = {"module." + k: v.numpy() for k, v in sd.items() if k not in frozen_counters}
    cfg = authors_b_config()
    d2["module.pixel_mean"] = np.array(cfg.MODEL.PIXEL_MEAN, np.float32).reshape(3, 1, 1)
    d2["module.pixel_std"] = np.array(cfg.MODEL.PIXEL_STD, np.float32).reshape(3, 1, 1)
    for i, a in enumerate(model.proposal_generator.anchor_generator.cell_anchors):
        d2[f"module.proposal_generator.anchor_generator.cell_anchors.{i}"] = a.numpy().copy()
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": d2, "__author__": "DensePoseFnL", "matching_heuristics": True}, f)
    checkpointer = DensePoseCheckpointer(model)
    checkpointer.load(str(path))
    report = checkpointer.last_load_report
    assert report.stripped_prefix == "module."
    assert sorted(report.filled) == sorted(frozen_counters)
    assert len(report.ignored) == 2 + 5
    for k, v in model.state_dict().items():
        expected = torch.zeros((), dtype=torch.int64) if k in frozen_counters else sd[k]
        assert torch.equal(v, expected), k


def test_legacy_buffers_that_disagree_with_the_config_are_an_error(tmp_path, layout, model):
    sd = synthetic_state_dict(layout)
    sd["pixel_mean"] = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)  # BGR order: not this model's
    torch.save({"model": sd}, tmp_path / "m.pth")
    with pytest.raises(CheckpointMismatchError, match="pixel_mean"):
        load_checkpoint(model, str(tmp_path / "m.pth"))


def test_numpy_in_torch_file_loads_without_unsafe_unpickling(tmp_path, layout, model):
    # torch.load(weights_only=True) alone refuses numpy arrays; we allow exactly the numpy globals
    sd = synthetic_state_dict(layout, seed=3)
    path = tmp_path / "np.pth"
    torch.save({"model": {k: v.numpy() for k, v in sd.items()}, "__author__": "x"}, path)
    with pytest.raises(Exception, match="numpy"):
        torch.load(path, weights_only=True)
    load_checkpoint(model, str(path))
    _assert_all_from(model, sd)


class _Boom:
    def __reduce__(self):
        return (print, ("code from the checkpoint ran",))


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_files_that_need_code_execution_are_refused(tmp_path, model, suffix):
    path = tmp_path / f"evil{suffix}"
    payload = {"model": {"x": _Boom()}}
    if suffix == ".pth":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointLoadError, match="trusted=True"):
        load_checkpoint(model, str(path))


# ---------------------------------------------------------------- mismatches
def test_mismatch_is_an_error_listing_every_entry_with_shapes(tmp_path, layout, model):
    sd = synthetic_state_dict(layout)
    del sd["roi_heads.box_predictor.cls_score.bias"]
    del sd["backbone.l5.weight"]
    sd["roi_heads.densepose_predictor.ann_index_lowres.weight"] = torch.zeros(64, 2, 4, 4)  # 2 vs 15 channels
    sd["roi_heads.densepose_predictor.ann_index_lowres.bias"] = torch.zeros(2)
    sd["roi_heads.densepose_head.NLBlock.g.0.weight"] = torch.zeros(32, 64, 1, 1)
    torch.save({"model": sd}, tmp_path / "bad.pth")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        DensePoseCheckpointer(model).load(str(tmp_path / "bad.pth"))
    msg = str(info.value)
    assert "2 model entries missing" in msg
    assert "roi_heads.box_predictor.cls_score.bias (2,)" in msg
    assert "backbone.l5.weight (64, 1152, 1, 1)" in msg
    assert "roi_heads.densepose_head.NLBlock.g.0.weight (32, 64, 1, 1)" in msg
    assert "roi_heads.densepose_predictor.ann_index_lowres.weight: checkpoint (64, 2, 4, 4) vs model (64, 15, 4, 4)" in msg
    assert "ann_index_lowres.bias: checkpoint (2,) vs model (15,)" in msg
    assert "strict=False" in msg
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "failed load changed the model"


def test_non_strict_loads_the_rest_and_logs_what_stayed_at_init(tmp_path, layout, model, caplog):
    sd = synthetic_state_dict(layout)
    del sd["roi_heads.box_predictor.cls_score.weight"]
    sd["roi_heads.box_predictor.bbox_pred.bias"] = torch.zeros(8)
    torch.save({"model": sd}, tmp_path / "partial.pth")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        report = load_checkpoint(model, str(tmp_path / "partial.pth"), strict=False)
    assert [n for n, _ in report.missing] == ["roi_heads.box_predictor.cls_score.weight"]
    assert report.shape_mismatch == [("roi_heads.box_predictor.bbox_pred.bias", (8,), (4,))]
    assert "roi_heads.box_predictor.cls_score.weight (2, 3136)" in caplog.text
    assert "stayed at their initial values" in caplog.text
    kept = {"roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.bias"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k] if k in kept else sd[k]), k


def test_default_predictor_loads_model_weights_strictly(tmp_path, layout):
    from densepose_fnl.engine.predictor import DefaultPredictor

    sd = synthetic_state_dict(layout, seed=4)
    torch.save({"model": sd, "__author__": "DensePoseFnL"}, tmp_path / "w.pth")
    predictor = DefaultPredictor(authors_b_config(["MODEL.WEIGHTS", str(tmp_path / "w.pth")]))
    _assert_all_from(predictor.model, sd)
    del sd["backbone.l2.bias"]
    torch.save({"model": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError, match="backbone.l2.bias"):
        DefaultPredictor(authors_b_config(["MODEL.WEIGHTS", str(tmp_path / "bad.pth")]))


# ---------------------------------------------------------------- conversion tool
def _convert(*args, capsys):
    """Run tools/convert_checkpoint.py's main() in this process (a subprocess re-imports torch + timm)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_checkpoint", REPO / "tools" / "convert_checkpoint.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    code = tool.main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_convert_tool_detectron2_roundtrip_and_rejects_mismatch(tmp_path, layout, model, capsys):
    sd = synthetic_state_dict(layout, seed=5)
    src = tmp_path / "theirs.pkl"
    with open(src, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in sd.items()}, "__author__": "DensePoseFnL"}, f)
    out = tmp_path / "ours.pth"
    r = _convert("--from", "detectron2", str(src), "--out", str(out), capsys=capsys)
    assert r.returncode == 0, r.stderr
    data = torch.load(out, weights_only=True)  # tensors only
    assert data["__author__"] == "DensePoseFnL" and data["__converted_from__"] == "theirs.pkl"
    load_checkpoint(model, str(out))
    _assert_all_from(model, sd)

    del sd["roi_heads.densepose_predictor.v_lowres.bias"]
    torch.save({"model": sd}, tmp_path / "bad.pth")
    r = _convert("--from", "detectron2", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "bad_out.pth"),
                 capsys=capsys)
    assert r.returncode == 1
    assert "roi_heads.densepose_predictor.v_lowres.bias (25,)" in r.stderr
    assert not (tmp_path / "bad_out.pth").exists()


# ---------------------------------------------------------------- ImageNet backbone weights
def test_timm_imagenet_weights_into_bottom_up(tmp_path, model, caplog, capsys):
    import timm

    classifier = timm.create_model("spnasnet_100", pretrained=False)
    g = torch.Generator().manual_seed(6)
    weights = {k: (torch.rand(v.shape, generator=g) + 0.5 if v.is_floating_point() else v)
               for k, v in classifier.state_dict().items()}
    torch.save(weights, tmp_path / "spnasnet_100.pth")  # timm files are bare state dicts
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO):
        report = load_timm_backbone_weights(model, str(tmp_path / "spnasnet_100.pth"))
    assert report.ok
    for k, v in model.state_dict().items():
        if k.startswith("backbone.bottom_up."):
            name = k[len("backbone.bottom_up."):]
            assert torch.equal(v, weights[name]), k
        else:
            assert torch.equal(v, before[k]), k
    assert "classifier.weight" in caplog.text and "conv_head.weight" in caplog.text

    r = _convert("--from", "timm", str(tmp_path / "spnasnet_100.pth"), "--out", str(tmp_path / "bb.pth"), capsys=capsys)
    assert r.returncode == 0, r.stderr
    converted = torch.load(tmp_path / "bb.pth", weights_only=True)["model"]
    assert set(converted) == {k for k in model.state_dict() if k.startswith("backbone.bottom_up.")}
    assert all(torch.equal(v, weights[k[len("backbone.bottom_up."):]]) for k, v in converted.items()
               if not k.endswith("num_batches_tracked"))

    other = timm.create_model("mnasnet_100", pretrained=False).state_dict()
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        load_timm_backbone_weights(model, other)


def test_repo_config_builds_the_authors_architecture():
    path = REPO / "configs" / "mobile_parsing_rcnn_b_s3x.yaml"
    if not path.is_file():
        pytest.skip("configs/mobile_parsing_rcnn_b_s3x.yaml not present")
    from densepose_fnl.config import load_config
    from densepose_fnl.modeling.registry import ROI_HEADS_REGISTRY

    ours = load_config(str(path), ["MODEL.TIMMNETS.PRETRAINED", "False"])
    ref = authors_b_config()
    assert ROI_HEADS_REGISTRY.get(ours.MODEL.ROI_HEADS.NAME) is ROI_HEADS_REGISTRY.get(ref.MODEL.ROI_HEADS.NAME)
    ours.MODEL.ROI_HEADS.NAME = ref.MODEL.ROI_HEADS.NAME
    assert ours.MODEL == ref.MODEL
    assert ours.INPUT == ref.INPUT


def test_own_training_checkpoints_resume_with_safe_loading(tmp_path, model):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    model.zero_grad()
    sum(p.sum() for p in model.parameters() if p.requires_grad).backward()
    optimizer.step()
    DensePoseCheckpointer(model, str(tmp_path), optimizer=optimizer).save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    fresh = build_model(authors_b_config())
    fresh_opt = torch.optim.SGD([p for p in fresh.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    extra = DensePoseCheckpointer(fresh, str(tmp_path), optimizer=fresh_opt).resume_or_load("", resume=True)
    assert extra == {"iteration": 9}
    _assert_all_from(fresh, model.state_dict())
    state = fresh_opt.state_dict()["state"]
    assert state and all("momentum_buffer" in s for s in state.values())


def test_missing_file_and_non_checkpoint_are_clear_errors(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        DensePoseCheckpointer(model).load(str(tmp_path / "nope.pth"))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointLoadError, match="not a checkpoint"):
        load_checkpoint(model, str(tmp_path / "list.pth"))
    torch.save({"iteration": 3}, tmp_path / "no_weights.pth")
    with pytest.raises(CheckpointLoadError, match="no state dict found"):
        load_checkpoint(model, str(tmp_path / "no_weights.pth"))
    assert DensePoseCheckpointer(model).load("") == {}  # no path: nothing loaded, as fvcore
