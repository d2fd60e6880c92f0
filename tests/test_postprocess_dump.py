"""The dump format of `apply_net dump` (densepose_fnl.postprocess.dump): a model's instances -> kept results ->
plain-tensor entries that load back with weights_only=True and give the same labels / UV."""
import torch

from densepose_fnl.postprocess import dump_entry, extract_results, load_dump, save_dump
from densepose_fnl.structures import DensePoseChartResult, Instances


def _instances():
    inst = Instances((60, 80))
    inst.pred_boxes = torch.tensor([[2.0, 3.0, 22.5, 33.9], [10.0, 10.0, 40.0, 50.0]])
    inst.scores = torch.tensor([0.9, 0.3])
    g = torch.Generator().manual_seed(0)
    inst.pred_densepose = [DensePoseChartResult(labels=torch.randint(0, 25, (h, w), generator=g),
                                                uv=torch.rand(2, h, w, generator=g)) for h, w in ((30, 20), (40, 30))]
    return inst


def test_min_score_keeps_the_confident_people():
    boxes, scores, results = extract_results(_instances(), 0.5)
    assert boxes.shape == (1, 4) and scores.tolist() == [torch.tensor(0.9).item()] and len(results) == 1
    assert len(extract_results(_instances(), None)[2]) == 2
    empty = Instances((5, 5))
    assert [len(t) for t in extract_results(empty, 0.5)] == [0, 0, 0]


def test_dump_round_trip_with_plain_tensors(tmp_path):
    boxes, scores, results = extract_results(_instances(), None)
    entries = [dump_entry("a.jpg", (60, 80), boxes, scores, results),
               dump_entry("clip.mp4", (60, 80), boxes[:1], scores[:1], results[:1], frame_index=7)]
    save_dump(entries, str(tmp_path / "sub" / "res.pkl"))
    back = load_dump(str(tmp_path / "sub" / "res.pkl"))
    assert [e["file_name"] for e in back] == ["a.jpg", "clip.mp4"] and back[1]["frame_index"] == 7
    assert "frame_index" not in back[0] and back[0]["image_size"] == (60, 80)
    assert torch.equal(back[0]["pred_boxes_XYXY"], boxes) and torch.equal(back[0]["scores"], scores)
    for dp, r in zip(back[0]["pred_densepose"], results):
        assert dp["labels"].dtype == torch.uint8 and torch.equal(dp["labels"].long(), r.labels)
        assert torch.equal(dp["uv"], r.uv) and set(dp) == {"labels", "uv"}
