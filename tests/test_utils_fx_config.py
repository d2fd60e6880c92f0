"""`utils.fx_config.backed_size_oblivious`, the private torch switch our captures and the ONNX export trace
with: a dynamic size traced at 1 (one image, one RoI, a 1-cell pyramid level) is not specialised, so the
exported graph keeps the declared range and serves every size with eager's results (without it, torch.export
refuses: "You marked n as dynamic but your code specialized it to be a constant (1)")."""
import torch
import torch.fx.experimental._config as fx_config
from torch import nn
from torch.export import Dim

from densepose_fnl.utils.fx_config import backed_size_oblivious


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x).flatten(1).softmax(-1)


def test_sizes_traced_at_one_stay_dynamic_and_the_graph_serves_every_size():
    torch.manual_seed(0)
    model = _Head().eval()
    dims = {"x": {0: Dim("n", min=1, max=64), 2: Dim("h", min=1, max=64), 3: Dim("w", min=1, max=64)}}
    with torch.no_grad(), backed_size_oblivious():
        ep = torch.export.export(model, (torch.randn(1, 2, 1, 1),), dynamic_shapes=dims, strict=False)
    ranges = sorted((int(r.lower), int(r.upper)) for r in ep.range_constraints.values())
    assert ranges == [(1, 64)] * 3
    gm = ep.module()
    with torch.no_grad():
        for shape in [(1, 2, 1, 1), (3, 2, 1, 1), (1, 2, 5, 7), (4, 2, 2, 3)]:
            x = torch.randn(shape)
            torch.testing.assert_close(gm(x), model(x))


def test_the_flag_is_set_inside_and_restored_after():
    before = fx_config.backed_size_oblivious
    with backed_size_oblivious():
        assert fx_config.backed_size_oblivious is True
    assert fx_config.backed_size_oblivious == before
    try:
        with backed_size_oblivious():
            raise KeyError("boom")
    except KeyError:
        pass
    assert fx_config.backed_size_oblivious == before
