"""Graph rows -> a PyG ``Batch`` of small integer codes, expanded to features on the device.

``collate_graphs`` turns a table of graph-store rows into one ``torch_geometric.data.Batch``:

- ``x``          ``[N, n_atom_codes]`` int64 categorical codes (the featuriser's vocabularies)
- ``z``          ``[N]`` atomic numbers (for the mass feature and for models that embed elements)
- ``edge_index`` ``[2, 2E]`` both directions of every bond, each molecule's edges contiguous
- ``edge_attr``  ``[2E, n_bond_codes]`` int64 bond codes
- ``batch``, ``ptr``, ``num_graphs`` as PyG builds them; ``mol_id`` ``[B]``

Everything is vectorised over the batch (no per-molecule Python), and the tensors stay integer until
:class:`FeatureExpander` (a module, so it moves with ``.to(device)``) expands them to one-hot floats on
the device: a batch of 512 molecules travels as ~100 kB instead of ~6 MB.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch_geometric.data import Batch

from mfray.chem.featurizers import AtomFeaturizer, BondFeaturizer


def _flat(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return pc.list_flatten(col).to_numpy(zero_copy_only=False)


def collate_graphs(rows: pa.Table, atom_featurizer: AtomFeaturizer, bond_featurizer: BondFeaturizer) -> Batch:
    """Build a PyG ``Batch`` from graph-store rows (see module docstring for the fields)."""
    n_atoms = rows.column("n_atoms").to_numpy().astype(np.int64)
    n_graphs = len(n_atoms)
    atom_cols = {p: _flat(rows.column(p)) for p in atom_featurizer.props}
    z = _flat(rows.column("atom_z")).astype(np.int64)
    x = atom_featurizer.encode(atom_cols)
    edges = _flat(rows.column("edge_index")).astype(np.int64).reshape(-1, 2)
    n_bonds = pc.list_value_length(rows.column("bond_type")).to_numpy(zero_copy_only=False).astype(np.int64)
    node_offset = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    shift = np.repeat(node_offset, n_bonds)
    src = edges[:, 0] + shift
    dst = edges[:, 1] + shift
    # both directions of each bond next to each other: a molecule's edges stay contiguous
    edge_index = np.stack([np.stack([src, dst], 1).reshape(-1), np.stack([dst, src], 1).reshape(-1)])
    bond_cols = {p: _flat(rows.column(p)) for p in bond_featurizer.props if p in rows.column_names}
    ea = bond_featurizer.encode(bond_cols) if len(edges) else np.zeros((0, bond_featurizer.n_codes), np.int64)
    edge_attr = np.repeat(ea, 2, axis=0)
    batch_vec = np.repeat(np.arange(n_graphs), n_atoms)
    ptr = np.concatenate([[0], np.cumsum(n_atoms)])
    out = Batch(
        x=torch.from_numpy(x),
        z=torch.from_numpy(z),
        edge_index=torch.from_numpy(edge_index),
        edge_attr=torch.from_numpy(edge_attr),
        batch=torch.from_numpy(batch_vec),
        ptr=torch.from_numpy(ptr),
        mol_id=torch.from_numpy(rows.column("mol_id").to_numpy().astype(np.int64)),
    )
    out._num_graphs = n_graphs
    return out


class FeatureExpander(torch.nn.Module):
    """Expand integer codes to dense features on the device: ``(x, z) -> [N, len(atom_featurizer)]``.

    Args:
        atom_featurizer: declares the node feature width (``len(atom_featurizer)``).
        bond_featurizer: declares the edge feature width (``len(bond_featurizer)``).
    """

    def __init__(self, atom_featurizer: AtomFeaturizer, bond_featurizer: BondFeaturizer) -> None:
        super().__init__()
        self.atom_featurizer = atom_featurizer
        self.bond_featurizer = bond_featurizer

    @property
    def node_dim(self) -> int:
        return len(self.atom_featurizer)

    @property
    def edge_dim(self) -> int:
        return len(self.bond_featurizer)

    def nodes(self, batch: Batch) -> torch.Tensor:
        return self.atom_featurizer.dense(batch.x, batch.z)

    def edges(self, batch: Batch) -> torch.Tensor:
        return self.bond_featurizer.dense(batch.edge_attr)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(node_dim={self.node_dim}, edge_dim={self.edge_dim})"
