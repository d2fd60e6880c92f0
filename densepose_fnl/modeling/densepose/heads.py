"""DensePose heads: the baseline stack of convs (DensePose R-CNN) and the DeepLab head (ASPP + optional
non-local block + convs) of Parsing R-CNN / Mobile Parsing R-CNN."""
import torch
from torch import nn
from torch.nn import functional as F

from ...layers import Conv2d
from ...structures import ShapeSpec
from ..registry import ROI_DENSEPOSE_HEAD_REGISTRY


def _msra_init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


@ROI_DENSEPOSE_HEAD_REGISTRY.register()
class DensePoseV1ConvXHead(nn.Module):
    """NUM_STACKED_CONVS convs (kernel CONV_HEAD_KERNEL) with ReLU: `body_conv_fcn1..N`."""

    def __init__(self, input_channels: int, hidden_dim: int = 512, kernel_size: int = 3, num_convs: int = 8):
        super().__init__()
        self.n_stacked_convs = num_convs
        n_channels = input_channels
        for i in range(num_convs):
            self.add_module(f"body_conv_fcn{i + 1}",
                            nn.Conv2d(n_channels, hidden_dim, kernel_size, stride=1, padding=kernel_size // 2))
            n_channels = hidden_dim
        self.output_shape = ShapeSpec(channels=n_channels)
        _msra_init_convs(self)

    @classmethod
    def from_config(cls, cfg, input_channels: int) -> "DensePoseV1ConvXHead":
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        return cls(input_channels, h.CONV_HEAD_DIM, h.CONV_HEAD_KERNEL, h.NUM_STACKED_CONVS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_stacked_convs):
            x = F.relu(getattr(self, f"body_conv_fcn{i + 1}")(x))
        return x


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average, 1x1 conv, [GN], ReLU, bilinear back to the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 branch, three dilated 3x3 branches, image pooling; concat; 1x1.

    norm "GN": detectron2 DensePose's variant (GroupNorm, no biases, rates 6/12/56).
    norm "": DensePoseFnL's variant used by Mobile Parsing R-CNN (biases, no norm, rates 6/12/18).
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = ""):
        super().__init__()
        if norm not in ("", "GN"):
            raise ValueError(f"MODEL.ROI_DENSEPOSE_HEAD.DEEPLAB.NORM must be '' or 'GN', got '{norm}'")
        gn = norm == "GN"
        rates = (6, 12, 56) if gn else (6, 12, 18)

        def branch(kernel: int, dilation: int) -> nn.Sequential:
            layers = [nn.Conv2d(in_channels, out_channels, kernel, padding=dilation if kernel > 1 else 0,
                                dilation=dilation, bias=not gn)]
            if gn:
                layers.append(nn.GroupNorm(32, out_channels))
            return nn.Sequential(*layers, nn.ReLU())

        pooling = [nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=not gn)]
        if gn:
            pooling.append(nn.GroupNorm(32, out_channels))
        self.convs = nn.ModuleList(
            [branch(1, 1)] + [branch(3, r) for r in rates] + [ASPPPooling(*pooling, nn.ReLU())])
        self.project = nn.Sequential(nn.Conv2d(5 * out_channels, out_channels, 1, bias=not gn), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class NonLocalBlock2D(nn.Module):
    """Embedded-Gaussian non-local block with 2x2 max-pool sub-sampling and a zero-initialised GN output."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.inter_channels = max(in_channels // 2, 1)
        self.g = nn.Sequential(nn.Conv2d(in_channels, self.inter_channels, 1), nn.MaxPool2d(2))
        self.theta = nn.Conv2d(in_channels, self.inter_channels, 1)
        self.phi = nn.Sequential(nn.Conv2d(in_channels, self.inter_channels, 1), nn.MaxPool2d(2))
        self.W = nn.Sequential(nn.Conv2d(self.inter_channels, in_channels, 1), nn.GroupNorm(32, in_channels))
        nn.init.constant_(self.W[1].weight, 0)
        nn.init.constant_(self.W[1].bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.size(0)
        g_x = self.g(x).view(n, self.inter_channels, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(n, self.inter_channels, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(n, self.inter_channels, -1)
        attention = F.softmax(torch.matmul(theta_x, phi_x), dim=-1)
        y = torch.matmul(attention, g_x).permute(0, 2, 1).reshape(n, self.inter_channels, *x.shape[2:])
        return self.W(y) + x


@ROI_DENSEPOSE_HEAD_REGISTRY.register()
class DensePoseDeepLabHead(nn.Module):
    """ASPP (output = input channels) -> [non-local] -> NUM_STACKED_CONVS convs of CONV_HEAD_DIM with ReLU."""

    def __init__(self, input_channels: int, hidden_dim: int = 512, kernel_size: int = 3, num_convs: int = 4,
                 norm: str = "", use_nonlocal: bool = False):
        super().__init__()
        self.ASPP = ASPP(input_channels, input_channels, norm)
        self.use_nonlocal = bool(use_nonlocal)
        if self.use_nonlocal:
            self.NLBlock = NonLocalBlock2D(input_channels)
        self.n_stacked_convs = num_convs
        n_channels = input_channels
        for i in range(num_convs):
            gn = nn.GroupNorm(32, hidden_dim) if norm == "GN" else None
            self.add_module(f"body_conv_fcn{i + 1}",
                            Conv2d(n_channels, hidden_dim, kernel_size, stride=1, padding=kernel_size // 2,
                                   bias=not norm, norm=gn))
            n_channels = hidden_dim
        self.output_shape = ShapeSpec(channels=hidden_dim)
        _msra_init_convs(self)  # DensePoseFnL re-initialises every conv of the head this way

    @classmethod
    def from_config(cls, cfg, input_channels: int) -> "DensePoseDeepLabHead":
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        return cls(input_channels, h.CONV_HEAD_DIM, h.CONV_HEAD_KERNEL, h.NUM_STACKED_CONVS, h.DEEPLAB.NORM,
                   h.DEEPLAB.NONLOCAL_ON)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ASPP(x)
        if self.use_nonlocal:
            x = self.NLBlock(x)
        for i in range(self.n_stacked_convs):
            x = F.relu(getattr(self, f"body_conv_fcn{i + 1}")(x))
        return x


def build_densepose_head(cfg, input_channels: int) -> nn.Module:
    from ..registry import get_from_registry

    name = cfg.MODEL.ROI_DENSEPOSE_HEAD.NAME
    return get_from_registry(ROI_DENSEPOSE_HEAD_REGISTRY, name, "MODEL.ROI_DENSEPOSE_HEAD.NAME").from_config(
        cfg, input_channels)
