"""Tiny molecular graphs from SMILES for the nn tests (RDKit only: no other mfray module)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from rdkit import Chem

ELEMENTS = (6, 7, 8, 9, 11, 16, 17, 35)  # + one "other" slot
BOND_TYPES = (Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE, Chem.BondType.AROMATIC)
NODE_DIM = len(ELEMENTS) + 2  # element one-hot with unknown slot, aromatic flag
EDGE_DIM = len(BOND_TYPES)

SMALL = "CC(=O)O"
LARGE = "CC(C)c1c(C(=O)Nc2ccccc2)c(-c2ccccc2)c(-c2ccc(F)cc2)n1CCC(O)CC(O)CC(=O)O"  # atorvastatin, 41 atoms
MOLECULES = ["CCO", "c1ccccc1O", "C", "CC(=O)Nc1ccc(O)cc1", "[Na+]", "C1CC1", "O=C=O", "CN1CCC[C@H]1c1cccnc1"]


@dataclass
class MolBatch:
    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    sizes: list[int]


def mol_graph(smiles: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mol = Chem.MolFromSmiles(smiles)
    assert mol is not None, smiles
    x = torch.zeros(mol.GetNumAtoms(), NODE_DIM)
    for a in mol.GetAtoms():
        z = a.GetAtomicNum()
        x[a.GetIdx(), ELEMENTS.index(z) if z in ELEMENTS else len(ELEMENTS)] = 1.0
        x[a.GetIdx(), -1] = float(a.GetIsAromatic())
    src, dst, attr = [], [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        onehot = [float(b.GetBondType() == t) for t in BOND_TYPES]
        src += [i, j]
        dst += [j, i]
        attr += [onehot, onehot]
    edge_index = torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)
    edge_attr = torch.tensor(attr, dtype=torch.float32).reshape(-1, EDGE_DIM)
    return x, edge_index, edge_attr


def make_batch(smiles: list[str]) -> MolBatch:
    xs, eis, eas, batch, sizes, offset = [], [], [], [], [], 0
    for g, s in enumerate(smiles):
        x, ei, ea = mol_graph(s)
        xs.append(x)
        eis.append(ei + offset)
        eas.append(ea)
        batch.append(torch.full((x.size(0),), g, dtype=torch.long))
        sizes.append(x.size(0))
        offset += x.size(0)
    return MolBatch(torch.cat(xs), torch.cat(eis, 1), torch.cat(eas), torch.cat(batch), len(smiles), sizes)


class Graphs:
    """What the ``graphs`` fixture hands to tests (conftest modules are not importable by name)."""

    node_dim = NODE_DIM
    edge_dim = EDGE_DIM
    small = SMALL
    large = LARGE
    molecules = MOLECULES
    make_batch = staticmethod(make_batch)


@pytest.fixture
def graphs() -> type[Graphs]:
    return Graphs
