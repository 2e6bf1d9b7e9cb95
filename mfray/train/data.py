"""In-memory graph datasets for training: graph rows + targets + augmentation, batched on the fly.

Rows stay as small-integer Arrow lists; each batch is collated with one vectorised call, so an epoch
over 10^5 molecules never materialises per-molecule Python objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import torch
from torch_geometric.data import Batch

from mfray.chem.featurizers import AtomFeaturizer, BondFeaturizer
from mfray.data.collate import collate_graphs

#: size-bucketed batches: molecules are sorted by atom count within chunks of this many batches
BUCKET_CHUNK = 32


class GraphBatch(NamedTuple):
    """One batch: the graphs, their targets ``y`` [B, T] (or None), augmentation ``aux`` [B, A] (or
    None) and ``censor`` [B, T] int8 (or None: every target value is fitted; else 0 = fitted, +1 =
    ``y`` is a lower bound of the true value, -1 an upper bound)."""

    graph: Batch
    y: torch.Tensor | None
    aux: torch.Tensor | None
    censor: torch.Tensor | None


@dataclass
class GraphDataset:
    """Graph rows aligned with targets ``y`` [n, T] (scaled, NaN = missing), ``aux`` [n, A] or None,
    and ``censor`` [n, T] int8 or None (see :class:`GraphBatch`)."""

    rows: pa.Table
    y: np.ndarray | None
    aux: np.ndarray | None
    atom_featurizer: AtomFeaturizer
    bond_featurizer: BondFeaturizer
    censor: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.rows.num_rows
        for name, arr in (("y", self.y), ("aux", self.aux), ("censor", self.censor)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows for {n} graphs")
        if self.censor is not None and not (self.censor != 0).any():
            self.censor = None  # nothing censored: the plain loss, no per-batch masks

    def __len__(self) -> int:
        return self.rows.num_rows

    @property
    def mol_ids(self) -> np.ndarray:
        return self.rows.column("mol_id").to_numpy()

    def batch(self, idx: np.ndarray) -> GraphBatch:
        rows = self.rows.take(pa.array(idx, pa.int64()))
        g = collate_graphs(rows, self.atom_featurizer, self.bond_featurizer)
        y = torch.from_numpy(self.y[idx]) if self.y is not None else None
        aux = torch.from_numpy(self.aux[idx]) if self.aux is not None else None
        censor = torch.from_numpy(self.censor[idx]) if self.censor is not None else None
        return GraphBatch(g, y, aux, censor)

    def _starts(self, batch_size: int, drop_last_single: bool) -> list[int]:
        n = len(self)
        starts = list(range(0, n, batch_size))
        if drop_last_single and len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        return starts

    def num_batches(self, batch_size: int, drop_last_single: bool = True) -> int:
        """How many batches :meth:`batches` yields with these arguments."""
        return len(self._starts(batch_size, drop_last_single))

    @property
    def n_atoms(self) -> np.ndarray:
        """Atoms per molecule, in row order."""
        if getattr(self, "_n_atoms", None) is None:
            self._n_atoms = self.rows.column("n_atoms").to_numpy().astype(np.int64)
        return self._n_atoms

    def batch_indices(self, batch_size: int, shuffle: bool = False, rng: np.random.Generator | None = None,
                      drop_last_single: bool = True, bucket: bool = False) -> list[np.ndarray]:
        """The row indices of each batch :meth:`batches` yields (every row exactly once).

        ``shuffle``: a permutation from ``rng``. ``bucket`` (with ``shuffle``): size-bucketed batches,
        the permutation is cut into chunks of :data:`BUCKET_CHUNK` batches, each chunk sorted by atom
        count (stable), cut into batches, and the order of all batches shuffled: molecules of similar
        size share a batch (little padding for attention readouts) while which molecules meet, and in
        which order the batches come, stays random and seeded.
        """
        n = len(self)
        gen = rng or np.random.default_rng()
        order = gen.permutation(n) if shuffle else np.arange(n)
        if shuffle and bucket and n > batch_size:
            chunk = batch_size * BUCKET_CHUNK
            sizes = self.n_atoms[order]
            order = np.concatenate([order[s:s + chunk][np.argsort(sizes[s:s + chunk], kind="stable")]
                                    for s in range(0, n, chunk)])
        starts = self._starts(batch_size, drop_last_single)
        out = [order[s:(starts[i + 1] if i + 1 < len(starts) else n)] for i, s in enumerate(starts)]
        if shuffle and bucket:
            out = [out[i] for i in gen.permutation(len(out))]
        return out

    def batches(self, batch_size: int, shuffle: bool = False, rng: np.random.Generator | None = None,
                drop_last_single: bool = True, bucket: bool = False) -> Iterator[GraphBatch]:
        """Yield batches (see :meth:`batch_indices`). A trailing batch of one graph is merged into the
        previous one in training (BatchNorm cannot normalise a single sample)."""
        for idx in self.batch_indices(batch_size, shuffle, rng, drop_last_single, bucket):
            yield self.batch(idx)
