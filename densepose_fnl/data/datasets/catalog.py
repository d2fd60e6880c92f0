"""Named datasets (detectron2's DatasetCatalog / MetadataCatalog, minus the global-config magic)."""
import copy
import threading
from typing import Any, Callable, Dict, List


class _DatasetCatalog:
    """name -> function returning a list of detectron2-style dataset dicts (called on every `get`)."""

    def __init__(self):
        self._funcs: Dict[str, Callable[[], List[dict]]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, func: Callable[[], List[dict]], replace: bool = False) -> None:
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', ...): expected a function, got {type(func).__name__}")
        with self._lock:
            if name in self._funcs and not replace:
                raise KeyError(f"Dataset '{name}' is already registered (pass replace=True to override)")
            self._funcs[name] = func

    def get(self, name: str) -> List[dict]:
        try:
            func = self._funcs[name]
        except KeyError:
            raise KeyError(
                f"Dataset '{name}' is not registered. Available datasets: {', '.join(sorted(self._funcs))}"
            ) from None
        dicts = func()
        if not isinstance(dicts, list):
            raise TypeError(f"Dataset '{name}': its loader returned {type(dicts).__name__}, expected a list of dicts")
        return dicts

    def list(self) -> List[str]:
        return sorted(self._funcs)

    def remove(self, name: str) -> None:
        with self._lock:
            self._funcs.pop(name)

    def __contains__(self, name: str) -> bool:
        return name in self._funcs


class Metadata:
    """Attribute bag for one dataset (thing_classes, json_file, image_root, ...)."""

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(
            f"Metadata of dataset '{self.name}' has no attribute '{key}'. Available: {sorted(self.as_dict())}"
        )

    def set(self, **kwargs: Any) -> "Metadata":
        for k, v in kwargs.items():
            object.__setattr__(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def as_dict(self) -> Dict[str, Any]:
        return copy.copy(self.__dict__)

    def __repr__(self) -> str:
        return f"Metadata({self.as_dict()})"


class _MetadataCatalog:
    """name -> Metadata (created empty on first `get`)."""

    def __init__(self):
        self._meta: Dict[str, Metadata] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Metadata:
        with self._lock:
            if name not in self._meta:
                self._meta[name] = Metadata(name)
            return self._meta[name]

    def list(self) -> List[str]:
        return sorted(self._meta)

    def remove(self, name: str) -> None:
        with self._lock:
            self._meta.pop(name, None)


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
