"""Registries: each block type is picked by name from the config, as in detectron2."""
from fvcore.common.registry import Registry

META_ARCH_REGISTRY = Registry("META_ARCH")
BACKBONE_REGISTRY = Registry("BACKBONE")
PROPOSAL_GENERATOR_REGISTRY = Registry("PROPOSAL_GENERATOR")
RPN_HEAD_REGISTRY = Registry("RPN_HEAD")
ANCHOR_GENERATOR_REGISTRY = Registry("ANCHOR_GENERATOR")
ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_BOX_HEAD_REGISTRY = Registry("ROI_BOX_HEAD")
ROI_DENSEPOSE_HEAD_REGISTRY = Registry("ROI_DENSEPOSE_HEAD")
DENSEPOSE_PREDICTOR_REGISTRY = Registry("DENSEPOSE_PREDICTOR")
# CSE vertex embedders, by the TYPE of a MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS entry
DENSEPOSE_EMBEDDER_REGISTRY = Registry("DENSEPOSE_EMBEDDER")


def get_from_registry(registry: Registry, name: str, config_key: str):
    """registry.get with an error that names the config key and the registered choices."""
    if name not in registry:
        choices = ", ".join(sorted(k for k, _ in registry))
        raise KeyError(f"{config_key} = '{name}' is not a registered {registry._name}; choices: {choices}")
    return registry.get(name)
DENSEPOSE_LOSS_REGISTRY = Registry("DENSEPOSE_LOSS")
