"""Dataset dicts and data loaders (detectron2's build_detection_{train,test}_loader)."""
import itertools
import logging
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from ..utils import comm
from .datasets import DatasetCatalog
from .mapper import DatasetMapper

logger = logging.getLogger(__name__)

__all__ = [
    "get_detection_dataset_dicts",
    "build_detection_train_loader",
    "build_detection_test_loader",
    "TrainingSampler",
    "InferenceSampler",
    "trivial_batch_collator",
]


def _world() -> tuple:
    return comm.get_rank(), comm.get_world_size()


def _shared_seed(seed: Optional[int]) -> int:
    """`seed` if >= 0, else a random seed identical on every rank."""
    if seed is not None and seed >= 0:
        return int(seed)
    return comm.broadcast_int(int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF)


def filter_images_without_annotations(dicts: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Keep images with at least one non-crowd annotation."""
    kept = [d for d in dicts if any(int(a.get("iscrowd", 0)) == 0 for a in d.get("annotations", []))]
    logger.info("Removed %d images without non-crowd annotations; %d left", len(dicts) - len(kept), len(kept))
    return kept


def get_detection_dataset_dicts(names: Union[str, Sequence[str]], filter_empty: bool = True) -> List[Dict[str, Any]]:
    """Concatenated dataset dicts of the named datasets; `filter_empty` drops images without non-crowd
    annotations."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ValueError("No dataset given (DATASETS.TRAIN / DATASETS.TEST is empty)")
    dicts = []
    for name in names:
        ds = DatasetCatalog.get(name)
        if not ds:
            raise ValueError(f"Dataset '{name}' is empty")
        for d in ds:
            d.setdefault("dataset", name)
        dicts.extend(ds)
    if filter_empty:
        dicts = filter_images_without_annotations(dicts)
        if not dicts:
            raise ValueError(f"No images with annotations left in {names} after filtering empty ones")
    return dicts


class TrainingSampler:
    """Infinite stream of indices: a new seeded permutation per epoch, every `world_size`-th index for
    this rank (detectron2's TrainingSampler)."""

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None, rank=None, world_size=None):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size {size}")
        r, w = _world()
        self.size, self.shuffle = int(size), shuffle
        self.seed = _shared_seed(seed)
        self.rank = r if rank is None else int(rank)
        self.world_size = w if world_size is None else int(world_size)

    def _infinite(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=g).tolist()
            else:
                yield from range(self.size)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(self._infinite(), self.rank, None, self.world_size)


class InferenceSampler(Sampler):
    """Every index once, in order, split into contiguous chunks per rank."""

    def __init__(self, size: int, rank=None, world_size=None):
        r, w = _world()
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
        shard = (size - 1) // world_size + 1 if size else 0
        self.indices = list(range(min(rank * shard, size), min((rank + 1) * shard, size)))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def trivial_batch_collator(batch: List[Any]) -> List[Any]:
    return batch


class _MapDataset(Dataset):
    def __init__(self, dicts: List[Dict[str, Any]], mapper: Callable):
        self.dicts, self.mapper = dicts, mapper

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, idx):
        return self.mapper(self.dicts[idx])


class _TrainStream(IterableDataset):
    """Maps the sampler's stream (split between DataLoader workers) and yields whole batches, grouped by
    aspect ratio (landscape / portrait) when `group_by_aspect` is set."""

    def __init__(self, dicts, mapper, sampler: TrainingSampler, batch_size: int, group_by_aspect: bool):
        self.dicts, self.mapper, self.sampler = dicts, mapper, sampler
        self.batch_size, self.group_by_aspect = batch_size, group_by_aspect

    def __iter__(self):
        info = get_worker_info()
        stream = iter(self.sampler)
        if info is not None and info.num_workers > 1:
            stream = itertools.islice(stream, info.id, None, info.num_workers)
        buckets: List[List[Any]] = [[], []]
        for idx in stream:
            item = self.mapper(self.dicts[idx])
            if item is None:
                continue
            b = 0
            if self.group_by_aspect:
                h, w = item["image"].shape[-2:] if "image" in item else (item["height"], item["width"])
                b = 0 if w > h else 1
            buckets[b].append(item)
            if len(buckets[b]) == self.batch_size:
                yield buckets[b]
                buckets[b] = []


def _seed_worker(worker_id: int) -> None:
    info = get_worker_info()
    seed = torch.initial_seed() % 2**31
    np.random.seed(seed % 2**32)
    ds = info.dataset if info is not None else None
    mapper = getattr(ds, "mapper", None)
    if hasattr(mapper, "reseed"):
        mapper.reseed(seed)


def build_detection_train_loader(cfg, mapper: Optional[Callable] = None, dataset=None) -> DataLoader:
    """Infinite loader of lists of mapped dicts, SOLVER.IMS_PER_BATCH // world_size per list.

    Shuffling is seeded by cfg.SEED (random but shared across ranks when < 0); augmentation randomness
    is seeded per worker from it. `dataset` (a list of dicts) overrides DATASETS.TRAIN."""
    rank, world = _world()
    total = int(cfg.SOLVER.IMS_PER_BATCH)
    if total % world != 0 or total < world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({total}) must be a multiple of the number of processes ({world})")
    batch = total // world
    if dataset is None:
        dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    seed = _shared_seed(int(cfg.SEED))
    if mapper is None:
        mapper = DatasetMapper(cfg, is_train=True)
    if hasattr(mapper, "reseed"):
        mapper.reseed(seed + 7919 * rank + 1)
    sampler = TrainingSampler(len(dataset), shuffle=True, seed=seed, rank=rank, world_size=world)
    stream = _TrainStream(dataset, mapper, sampler, batch, bool(cfg.DATALOADER.ASPECT_RATIO_GROUPING))
    workers = int(cfg.DATALOADER.NUM_WORKERS)
    g = torch.Generator()
    g.manual_seed(seed + rank)
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        collate_fn=trivial_batch_collator,
        worker_init_fn=_seed_worker if workers > 0 else None,
        generator=g,
        persistent_workers=workers > 0,
    )


def build_detection_test_loader(
    cfg, dataset_name: Optional[Union[str, Sequence[str]]] = None, mapper: Optional[Callable] = None, dataset=None
) -> DataLoader:
    """Batch-1 loader over a dataset, in order (this rank's contiguous shard when distributed); test-time
    resize MIN_SIZE_TEST / MAX_SIZE_TEST. Every image is kept (no empty-image filtering)."""
    if dataset is None:
        if dataset_name is None:
            raise ValueError("build_detection_test_loader needs a dataset name (or dataset=list of dicts)")
        dataset = get_detection_dataset_dicts(dataset_name, filter_empty=False)
    if mapper is None:
        mapper = DatasetMapper(cfg, is_train=False)
    return DataLoader(
        _MapDataset(dataset, mapper),
        batch_size=1,
        sampler=InferenceSampler(len(dataset)),
        num_workers=int(cfg.DATALOADER.NUM_WORKERS),
        collate_fn=trivial_batch_collator,
    )
