from typing import NamedTuple, Optional


class ShapeSpec(NamedTuple):
    """The contract between blocks: what a feature map looks like (any field may be unknown)."""

    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    stride: Optional[int] = None
