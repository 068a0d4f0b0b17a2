"""How batches are read: worker processes, pinned memory and persistent workers, without changing any batch.

Every batch in wfkern is read by ``iter_batches(dataset, index_batches)`` (training, untraining, validation,
evaluation, baselines). ``loader_options`` sets, for the code run inside it, how datasets that decode their
samples lazily (an ImageFolder tree) are read:

    with wfkern.loader_options(num_workers=4, pin_memory=True):
        wfkern.unlearn(wf, train, val, device="cuda")

With ``num_workers > 0`` each batch is cut into ``num_workers`` contiguous chunks, the chunks are decoded by
worker processes (several batches ahead) and glued back in order, so every batch holds the same samples, in the
same order, with the same values as with ``num_workers=0``. The workers stay alive between calls
(``persistent_workers``) until the ``with`` block ends: an untraining step that reads one batch pays no start-up.
In-memory datasets (``get_batch``: the digits, MNIST, Fashion-MNIST, CIFAR-10) are one indexing operation per
batch and never use workers. ``pin_memory`` pins each batch (when CUDA is available) for a faster copy to the GPU.

Imports no other wfkern module.
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["LoaderOptions", "loader_options", "current_loader_options", "read_batches", "MAX_WORKERS"]

MAX_WORKERS = 256
# Live worker pools per ``loader_options`` block (one per lazily decoded dataset); the oldest is shut down beyond.
MAX_POOLS = 4


@dataclass(frozen=True)
class LoaderOptions:
    """How ``iter_batches`` reads lazily decoded datasets.

    Attributes:
        num_workers: worker processes that decode samples (0: the calling process does).
        pin_memory: pin each batch in page-locked memory (only when CUDA is available; ignored otherwise).
        persistent_workers: keep the workers between calls (until the ``loader_options`` block ends).
        prefetch_factor: chunks each worker decodes ahead.
    """

    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = True
    prefetch_factor: int = 2

    def __post_init__(self) -> None:
        problem = loader_option_problem("num_workers", self.num_workers)
        problem = problem or loader_option_problem("prefetch_factor", self.prefetch_factor)
        for name in ("pin_memory", "persistent_workers"):
            if not isinstance(getattr(self, name), bool):
                problem = problem or (name, "be True or False", getattr(self, name))
        if problem is not None:
            name, expectation, got = problem
            raise ValueError(f"wfkern.loader_options: {name} must {expectation}, got {got!r}")


def loader_option_problem(name: str, value) -> tuple[str, str, object] | None:
    """None when ``value`` is a valid ``name`` ("num_workers" / "prefetch_factor"), else (name, expectation, value).

    One rule for the library and the command line (``--num-workers``).
    """
    lo, hi = (0, MAX_WORKERS) if name == "num_workers" else (1, 64)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        return name, f"be an integer >= {lo} and <= {hi}", value
    return None


class _Feed:
    """A batch sampler whose batches are set before each pass (the DataLoader of a pool stays the same)."""

    def __init__(self) -> None:
        self.pending: list[list[int]] = []

    def __iter__(self):
        return iter(self.pending)

    def __len__(self) -> int:
        return len(self.pending)


class _Pool:
    """Worker processes for one dataset: a DataLoader fed with chunks of index batches."""

    def __init__(self, dataset: Dataset, options: LoaderOptions, persistent: bool) -> None:
        self.feed = _Feed()
        # A private generator: reading batches never draws from the global RNG (with or without workers).
        self.loader = DataLoader(dataset, batch_sampler=self.feed, num_workers=options.num_workers,
                                 persistent_workers=persistent, prefetch_factor=options.prefetch_factor,
                                 generator=torch.Generator().manual_seed(0))
        self.busy = False
        self.iterator = None

    def run(self, chunks: list[list[int]]) -> Iterator:
        """An iterator over the collated chunks, in order (a persistent pool reuses its workers)."""
        self.feed.pending = chunks
        self.iterator = iter(self.loader)
        return self.iterator

    def close(self) -> None:
        """Stop the workers now (not when the garbage collector gets to them)."""
        if self.iterator is not None and hasattr(self.iterator, "_shutdown_workers"):
            self.iterator._shutdown_workers()
        self.iterator = None
        self.loader._iterator = None


class _Session:
    """The state of one ``loader_options`` block: its options and its worker pools."""

    def __init__(self, options: LoaderOptions) -> None:
        self.options = options
        self.pools: OrderedDict[int, _Pool] = OrderedDict()

    def pool(self, dataset: Dataset) -> _Pool:
        key = id(dataset)  # the pool holds the dataset, so the id is not reused while the pool lives
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = _Pool(dataset, self.options, persistent=True)
            idle = [k for k, p in self.pools.items() if not p.busy and k != key]  # oldest first
            for old in idle[:max(0, len(self.pools) - MAX_POOLS)]:
                self.pools.pop(old).close()
        self.pools.move_to_end(key)
        return pool

    def close(self) -> None:
        while self.pools:
            self.pools.popitem()[1].close()


_DEFAULT = LoaderOptions()
_CURRENT: contextvars.ContextVar[_Session | None] = contextvars.ContextVar("wfkern_loader_options", default=None)


@contextlib.contextmanager
def loader_options(num_workers: int = 0, *, pin_memory: bool = False, persistent_workers: bool = True,
                   prefetch_factor: int = 2) -> Iterator[LoaderOptions]:
    """Read batches with worker processes / pinned memory inside the block (every wfkern function honours it).

    Args:
        num_workers: worker processes decoding lazily loaded samples (ImageFolder); 0 = in the caller.
            Batches are identical (samples, order, values) for every count.
        pin_memory: pin each batch when CUDA is available (for the copy to the GPU); ignored otherwise.
        persistent_workers: keep the workers alive between reads until the block ends (else per read).
        prefetch_factor: chunks each worker decodes ahead.
    Yields:
        The LoaderOptions in force.
    Raises:
        ValueError: a count out of range (``num_workers`` in [0, 256]).
    """
    session = _Session(LoaderOptions(num_workers, pin_memory, persistent_workers, prefetch_factor))
    token = _CURRENT.set(session)
    try:
        yield session.options
    finally:
        _CURRENT.reset(token)
        session.close()


def current_loader_options() -> LoaderOptions:
    """The options of the innermost ``loader_options`` block (defaults outside any)."""
    session = _CURRENT.get()
    return session.options if session is not None else _DEFAULT


def _pin(t: Tensor) -> Tensor:
    return t.pin_memory() if isinstance(t, Tensor) and not t.is_pinned() else t


def _root(dataset: Dataset, idx: list[int]) -> tuple[Dataset, list[int]]:
    """Follow plain ``Subset`` wrappers down to the dataset that decodes, mapping the indices on the way."""
    while isinstance(dataset, Subset) and type(dataset).__getitem__ is Subset.__getitem__ \
            and getattr(type(dataset), "__getitems__", None) is getattr(Subset, "__getitems__", None):
        indices = dataset.indices
        idx = [int(indices[i]) for i in idx]
        dataset = dataset.dataset
    return dataset, idx


def _glue(parts: Sequence, pin: bool):
    """Concatenate collated chunks (x, y) along the batch; straight into pinned memory when asked."""
    if len(parts) == 1:
        x, y = parts[0]
        return (_pin(x), _pin(torch.as_tensor(y))) if pin else (x, torch.as_tensor(y))
    xs = [p[0] for p in parts]
    ys = [torch.as_tensor(p[1]) for p in parts]
    if pin:
        shape = (sum(x.shape[0] for x in xs), *xs[0].shape[1:])
        x = torch.cat(xs, out=torch.empty(shape, dtype=xs[0].dtype, pin_memory=True))
        return x, _pin(torch.cat(ys))
    return torch.cat(xs), torch.cat(ys)


def read_batches(dataset: Dataset, index_batches: Iterable[Tensor], num_workers: int | None = None
                 ) -> Iterator[tuple[Tensor, Tensor]]:
    """``iter_batches`` for datasets without ``get_batch``: the DataLoader path, with the current options.

    Args:
        dataset: a map-style dataset yielding (x, y).
        index_batches: (B,) int64 index tensors.
        num_workers: overrides the current ``loader_options`` count (None: the current one).
    Yields:
        (x, y): (B, ...) collated samples and (B,) / (B, Nc) targets, in the order of the indices.
    """
    session = _CURRENT.get()
    options = session.options if session is not None else _DEFAULT
    workers = options.num_workers if num_workers is None else int(num_workers)
    pin = options.pin_memory and torch.cuda.is_available()
    batches = [idx.tolist() if isinstance(idx, Tensor) else [int(i) for i in idx] for idx in index_batches]
    if workers == 0:
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=0,
                            generator=torch.Generator().manual_seed(0))
        for x, y in loader:
            yield (_pin(x), _pin(torch.as_tensor(y))) if pin else (x, torch.as_tensor(y))
        return
    if not batches:
        return
    root = dataset
    mapped = []
    for batch in batches:
        root, root_indices = _root(dataset, batch)
        mapped.append(root_indices)
    # Contiguous chunks, one per worker at most: a batch is decoded in parallel and glued back in order.
    chunks, counts = [], []
    for batch in mapped:
        n_chunks = max(1, min(workers, len(batch)))
        step, extra = divmod(len(batch), n_chunks)
        start = 0
        for i in range(n_chunks):
            stop = start + step + (1 if i < extra else 0)
            chunks.append(batch[start:stop])
            start = stop
        counts.append(n_chunks)
    persistent = session is not None and options.persistent_workers and num_workers is None
    pool = session.pool(root) if persistent else None
    if pool is None or pool.busy:  # a read nested in another read of the same dataset gets its own workers
        pool, own = _Pool(root, LoaderOptions(workers, options.pin_memory, False, options.prefetch_factor), False), True
    else:
        own = False
    pool.busy = True
    try:
        decoded = pool.run(chunks)
        for n_chunks in counts:
            yield _glue([next(decoded) for _ in range(n_chunks)], pin)
    finally:
        pool.busy = False
        if own:
            pool.close()
