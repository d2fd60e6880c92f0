"""fvcore CfgNode with detectron2's habits (`_BASE_`, KEY VALUE overrides) and errors that name the
offending key and the file it came from."""
import os
import re
from typing import Any, List, Optional

import yaml
from fvcore.common.config import BASE_KEY
from fvcore.common.config import CfgNode as _FvcoreCfgNode


class ConfigError(ValueError):
    """A config file or override that cannot be used: names the key and where it came from."""


_KEY_IN_MESSAGE = re.compile(r"config key: ([A-Za-z0-9_.]+)")


def _yaml_chain(filename: str) -> List[str]:
    """The file and all its `_BASE_` ancestors, nearest first."""
    chain, current = [], filename
    while current:
        chain.append(current)
        try:
            with open(current) as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            break
        base = data.get(BASE_KEY) if isinstance(data, dict) else None
        if not base:
            break
        current = base if os.path.isabs(base) else os.path.join(os.path.dirname(current), base)
    return chain


def _file_defining(key: str, filename: str) -> str:
    """Which file of the `_BASE_` chain sets `key` (dotted), for error messages."""
    for path in _yaml_chain(filename):
        try:
            with open(path) as f:
                node = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            continue
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return path
    return filename


class CfgNode(_FvcoreCfgNode):
    """detectron2-style config node; see `get_cfg()` for the defaults."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        if not os.path.isfile(cfg_filename):
            raise ConfigError(f"Config file not found: {cfg_filename}")
        for path in _yaml_chain(cfg_filename)[1:]:
            if not os.path.isfile(path):
                raise ConfigError(f"{cfg_filename}: its _BASE_ file is missing: {path}")
        try:
            loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        except yaml.YAMLError as e:
            raise ConfigError(f"{cfg_filename}: not valid YAML: {e}") from e
        loaded = type(self)(loaded, new_allowed=False)
        try:
            self.merge_from_other_cfg(loaded)
        except (KeyError, ValueError, AssertionError) as e:
            msg = e.args[0] if e.args else str(e)
            m = _KEY_IN_MESSAGE.search(str(msg))
            where = _file_defining(m.group(1), cfg_filename) if m else cfg_filename
            raise ConfigError(f"{where}: {_explain(msg)}") from e

    def merge_from_list(self, cfg_list: List[Any]) -> None:
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Command-line overrides must be KEY VALUE pairs, got an odd number of items: {cfg_list}"
            )
        try:
            super().merge_from_list(cfg_list)
        except (KeyError, ValueError, AssertionError) as e:
            msg = e.args[0] if e.args else str(e)
            raise ConfigError(f"command-line override: {_explain(msg)}") from e

    def dump(self, *args, **kwargs) -> str:
        return super().dump(*args, **kwargs)


def _explain(msg: Any) -> str:
    msg = str(msg)
    if msg.startswith("Non-existent config key"):
        key = msg.split(":", 1)[1].strip()
        return f"unknown config key '{key}' (not a detectron2 / DensePose / densepose_fnl option)"
    if msg.startswith("Type mismatch"):
        return f"bad value: {msg}"
    return msg


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    from .defaults import _C

    return _C.clone()


def load_config(config_file: Optional[str] = None, opts: Optional[List[Any]] = None) -> CfgNode:
    """Defaults <- config file (with `_BASE_`) <- KEY VALUE overrides."""
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    check_supported(cfg, config_file)
    return cfg


def check_supported(cfg: CfgNode, config_file: Optional[str] = None) -> None:
    """ConfigError for a setting this project accepts but does not implement (see `config.unsupported`), or
    a config VERSION other than detectron2's current 2."""
    from .unsupported import unsupported_settings

    where = f"{config_file}: " if config_file else ""
    if cfg.VERSION != 2:
        raise ConfigError(f"{where}VERSION {cfg.VERSION}: only VERSION 2 configs (detectron2's current format) "
                          "are supported")
    for key, value, reason in unsupported_settings(cfg, get_cfg()):
        raise ConfigError(f"{where}{key} = {value!r}: {reason}; remove it or set it to its default")
