"""Reproducible, resumable batches of a tensor, Dataset or DataLoader, sharded across ranks.

The order of epoch ``e`` depends only on (``shuffle_seed``, ``e``), so a
resumed run sees exactly the batches the interrupted one would have. Under
``torchrun`` each rank takes every ``world``-th example of that order
(``DistributedSampler``'s semantics: every example once per epoch, the order
padded by its first examples to a multiple of ``world`` unless ``drop_last``).
The rank's batch ``i`` then holds the examples of the one-process batch ``i``
of ``world`` times the size, so ``world`` ranks at batch B give the gradients
of one process at batch ``world * B``.
"""

from __future__ import annotations

import torch

from ..checks import bounded_support, check_support, count
from ..programs import split_batch
from ..runtime import check_finite, on_device
from ..safety import as_training_dtype

__all__ = ["Batches"]


class _Indices(torch.utils.data.Sampler):
    """The indices of one rank for one epoch, for a DataLoader rebuilt to be sharded."""

    def __init__(self, batches: "Batches"):
        self.batches, self.epoch = batches, 0

    def __iter__(self):
        return iter(self.batches.indices(self.epoch).tolist())

    def __len__(self):
        return self.batches.per_rank


class Batches:
    """Batches of ``data`` for one rank (``rank`` of ``world``) on ``device``, in ``dtype``."""

    def __init__(self, data, batch_size, shuffle, drop_last, shuffle_seed, device, dtype=torch.float32,
                 rank=0, world=1):
        self.device, self.shuffle, self.drop_last, self.dtype = device, shuffle, drop_last, dtype
        self.shuffle_seed, self.loader, self.site, self.item = shuffle_seed, None, None, 0
        self.rank, self.world = rank, world
        if isinstance(data, torch.utils.data.DataLoader):
            self.loader, self.dataset = data, None
            n = len(data.dataset) if hasattr(data.dataset, "__len__") else None
            if n == 0:
                raise ValueError("data: the DataLoader's dataset is empty; expected at least one example")
            self.batch_size = data.batch_size or 1
        elif isinstance(data, torch.Tensor):
            data = as_training_dtype(data, dtype)
            check_finite(data)
            self.dataset, n = data, data.shape[0]
        elif isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
            # (x, y, ...) as evaluate and to_arviz take it: batches (x, y, ...) of the same rows
            rows = {t.shape[0] if t.dim() else None for t in data}
            if len(rows) != 1 or None in rows:
                raise ValueError(f"data: the tensors of a tuple (x, y, ...) need the same number of rows, got "
                                 f"shapes {[tuple(t.shape) for t in data]}")
            self.dataset = data = torch.utils.data.TensorDataset(as_training_dtype(data[0], dtype), *data[1:])
            n = len(data)
        elif isinstance(data, torch.utils.data.Dataset):
            n = len(data)
            if n == 0:
                raise ValueError("data: the Dataset is empty; expected at least one example")
            self.dataset = data
        else:
            raise ValueError(
                f"data: expected a torch.Tensor, a tuple (x, y, ...) of them, a Dataset or a DataLoader, "
                f"got {type(data).__name__}"
            )
        self.n = n
        if world > 1 and self.loader is not None:
            self.loader = self._sharded(self.loader)
        if self.loader is None:
            count("batch_size", batch_size)
            if drop_last and batch_size > self.per_rank:
                raise ValueError(
                    f"batch_size: {batch_size} is larger than the data ({self.per_rank} examples"
                    f"{' per rank' if world > 1 else ''}) with drop_last=True, so no batch would be trained on"
                )
            self.batch_size = min(batch_size, self.per_rank)

    @property
    def per_rank(self) -> int:
        """Examples this rank sees per epoch."""
        if self.world == 1:
            return self.n
        return self.n // self.world if self.drop_last else -(-self.n // self.world)

    def _sharded(self, loader):
        """The same loader drawing this rank's indices (a DistributedSampler of the user's is kept)."""
        if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
            return loader
        if isinstance(loader.dataset, torch.utils.data.IterableDataset) or loader.batch_size is None:
            raise ValueError("data: under torchrun fit shards a DataLoader by its sampler; an IterableDataset or a "
                             "custom batch_sampler cannot be sharded: pass a map-style Dataset or a DataLoader "
                             "with a DistributedSampler")
        self._sampler = _Indices(self)
        return torch.utils.data.DataLoader(
            loader.dataset, batch_size=loader.batch_size, sampler=self._sampler, num_workers=loader.num_workers,
            collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
            worker_init_fn=loader.worker_init_fn, persistent_workers=loader.persistent_workers)

    def watch(self, site: dict, item: int = 0) -> None:
        """Check the data against the support of the data site's distribution: a tensor (or a
        TensorDataset's items) now, in one pass; batches of any other Dataset or a DataLoader as they come
        (with finite values). ``item`` is the batch item the site observes: 0 for ``x``, 1 for ``y`` of
        ``model(x, y)`` with ``obs=y`` (a regression), whose support is the one that holds."""
        self.item = item
        if isinstance(self.dataset, torch.utils.data.TensorDataset):
            tensors = self.dataset.tensors
            x = as_training_dtype(tensors[0], self.dtype)
            check_finite(x)
            observed = tensors[item]
            if item:
                check_finite(observed, f"data (batch item {item}, observed at site {site['name']!r})")
        elif isinstance(self.dataset, torch.Tensor):
            observed = self.dataset
        else:
            self.site = site
            return
        if site["value"].shape[1:] == observed.shape[1:]:
            check_support(site, observed)

    def _ready(self, batch):
        batch = on_device(batch, self.device)
        x, args = split_batch(batch)
        x = as_training_dtype(x, self.dtype)
        if self.site is not None:  # batches not checked at setup: finite values and support, each batch
            observed = args[self.item - 1] if self.item else x
            if self.item:
                check_finite(x, "data")
            if bounded_support(self.site):
                check_support(self.site, observed)  # one pass: a NaN lies outside any bounded support
            else:
                check_finite(observed, "data")
        return (x, *args) if args else x

    def __len__(self):
        if self.loader is not None:
            return len(self.loader)
        full, rest = divmod(self.per_rank, self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def order(self, epoch):
        """The one-process order of the examples in ``epoch``.

        One batch of all the examples keeps their order even with ``shuffle``: its loss is the same sum
        either way, and a guide with a parameter row per example (an ``AutoNormal`` over a local latent)
        must meet the same example at that row on every step."""
        if not self.shuffled:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(int(self.shuffle_seed) * 100_003 + epoch)
        return torch.randperm(self.n, generator=g)

    @property
    def shuffled(self) -> bool:
        return self.shuffle and self.batch_size < self.n

    def _padded(self, epoch):
        # DistributedSampler's rule, written out so that world = 1 is exactly the one-process order
        # and the ranks' batch i together are the one-process batch i (DistributedSampler draws its
        # own permutation, which would differ from the one-process run).
        idx = self.order(epoch)
        total = self.per_rank * self.world
        if total > self.n:
            idx = torch.cat([idx, idx[:total - self.n]])
        return idx[:total]

    def indices(self, epoch):
        """This rank's example indices in ``epoch``, in order."""
        idx = self.order(epoch)
        return idx if self.world == 1 else self._padded(epoch)[self.rank::self.world]

    def first(self):
        """The first batch of epoch 0 of all ranks together (what one process at ``world`` times the
        batch size would see first): fit sets the objective up on it, so data-dependent
        initialisation (ActNorm) is the same on every rank and in one process."""
        if self.world == 1 or (self.loader is not None and not hasattr(self, "_sampler")):
            return next(iter(self.epoch(0)))
        chunk = self._padded(0)[:self.batch_size * self.world]
        if self.loader is not None:
            return self._ready(self.loader.collate_fn([self.loader.dataset[int(j)] for j in chunk]))
        return self._ready(self._rows(self.dataset, chunk))

    @staticmethod
    def _rows(source, chunk):
        if isinstance(source, torch.Tensor):
            return source[chunk]
        if isinstance(source, torch.utils.data.TensorDataset):  # its tensors indexed at once, not row by row
            return tuple(t[chunk] for t in source.tensors)
        return torch.utils.data.default_collate([source[int(j)] for j in chunk])

    def epoch(self, epoch, skip=0):
        """Yield this rank's batches of ``epoch``, skipping the first ``skip``."""
        if self.loader is not None:
            yield from self._loader_epoch(epoch, skip)
            return
        idx = self.indices(epoch)
        sliced = isinstance(self.dataset, torch.Tensor) and self.world == 1 and not self.shuffled
        for i in range(skip, len(self)):
            lo, hi = i * self.batch_size, (i + 1) * self.batch_size
            # unshuffled, one rank: a view, no copy
            batch = self.dataset[lo:hi] if sliced else self._rows(self.dataset, idx[lo:hi])
            yield self._ready(batch)

    def _loader_epoch(self, epoch, skip):
        # The loader's shuffle and worker seeds, made functions of (seed, epoch) so that
        # resume is exact; left alone, each new iterator would draw from the global RNG.
        seed = int(self.shuffle_seed) * 100_003 + epoch
        self.loader.generator = torch.Generator().manual_seed(seed)
        sampler = self.loader.sampler
        if isinstance(sampler, torch.utils.data.RandomSampler):
            sampler.generator = torch.Generator().manual_seed(seed)
        elif isinstance(sampler, torch.utils.data.DistributedSampler):
            sampler.set_epoch(epoch)
        elif isinstance(sampler, _Indices):
            sampler.epoch = epoch
        for i, batch in enumerate(self.loader):
            if i >= skip:
                yield self._ready(batch)
