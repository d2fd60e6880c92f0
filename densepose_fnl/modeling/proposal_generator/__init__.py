from .anchor_generator import DefaultAnchorGenerator
from .rpn import RPN, StandardRPNHead, build_proposal_generator

__all__ = ["DefaultAnchorGenerator", "RPN", "StandardRPNHead", "build_proposal_generator"]
