from .config import CfgNode, ConfigError, get_cfg, load_config

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_config"]
