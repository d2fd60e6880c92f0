from .backbone import Backbone
from .bifpn import BiFPN, build_timm_bifpn_backbone
from .fpn import FPN, LastLevelMaxPool, build_resnet_fpn_backbone, build_timm_fpn_backbone
from .resnet import ResNet, build_resnet_backbone
from .timm_backbone import TimmBackbone, build_timm_backbone

__all__ = [
    "Backbone", "BiFPN", "FPN", "LastLevelMaxPool", "ResNet", "TimmBackbone",
    "build_resnet_backbone", "build_resnet_fpn_backbone", "build_timm_backbone", "build_timm_bifpn_backbone",
    "build_timm_fpn_backbone",
]
