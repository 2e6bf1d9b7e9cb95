import numpy as np
import torch
from rdkit import Chem

from mfray.chem.featurizers import build_featurizers
from mfray.data.collate import FeatureExpander, collate_graphs


def test_collate_builds_a_batch_matching_rdkit(demo_store):
    mols = demo_store.table("molecules").head(8)
    rows = demo_store.graphs(mols["mol_id"].to_numpy())
    a, b = build_featurizers("paper", 35)
    batch = collate_graphs(rows, a, b)
    rd = [Chem.MolFromSmiles(s) for s in mols["smiles"].to_list()]
    n = sum(m.GetNumAtoms() for m in rd)
    e = sum(m.GetNumBonds() for m in rd)
    assert batch.num_graphs == 8 and batch.x.shape == (n, 7) and batch.edge_index.shape == (2, 2 * e)
    assert batch.edge_attr.shape == (2 * e, 5)
    assert torch.equal(batch.ptr, torch.tensor(np.concatenate([[0], np.cumsum([m.GetNumAtoms() for m in rd])])))
    # every edge stays inside its molecule and appears in both directions
    g = batch.batch
    assert torch.equal(g[batch.edge_index[0]], g[batch.edge_index[1]])
    pairs = set(map(tuple, batch.edge_index.t().tolist()))
    assert all((j, i) in pairs for i, j in pairs)
    assert torch.equal(batch.z, torch.tensor([a.GetAtomicNum() for m in rd for a in m.GetAtoms()]))
    fe = FeatureExpander(a, b)
    x = fe.nodes(batch)
    assert x.shape == (n, 62) and fe.edges(batch).shape == (2 * e, 13)
    # 6 one-hot blocks per atom + aromatic flag + mass/100
    mass = torch.tensor([at.GetMass() for m in rd for at in m.GetAtoms()]) * 0.01
    arom = torch.tensor([float(at.GetIsAromatic()) for m in rd for at in m.GetAtoms()])
    assert torch.allclose(x.sum(1), 6 + arom + mass, atol=1e-3)


def test_single_atom_and_edgeless_molecules(tmp_path):
    import pyarrow as pa

    from mfray.chem.graph import GraphExtractor
    from mfray.data.featurize import GRAPH_COLUMNS

    fb = GraphExtractor()(["C", "O", "CC"])
    cols = fb.graph_columns()
    rows = pa.table({"mol_id": pa.array([1, 2, 3], pa.int64()), **{k: cols[k] for k in GRAPH_COLUMNS}})
    a, b = build_featurizers()
    batch = collate_graphs(rows.slice(0, 2), a, b)
    assert batch.x.shape == (2, 7) and batch.edge_index.shape == (2, 0) and batch.edge_attr.shape == (0, 4)
    batch = collate_graphs(rows, a, b)
    assert batch.edge_index.tolist() == [[2, 3], [3, 2]]
