from .anchor_generator import DefaultAnchorGenerator
from .rpn import RPN, StandardRPNHead, build_proposal_generator, find_top_rpn_proposals

__all__ = ["DefaultAnchorGenerator", "RPN", "StandardRPNHead", "build_proposal_generator", "find_top_rpn_proposals"]
