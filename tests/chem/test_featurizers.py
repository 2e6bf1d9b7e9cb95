import numpy as np
import pytest
import torch

from mfray.chem.featurizers import ATOM_FEATURIZERS, BOND_FEATURIZERS, AtomFeaturizer, BondFeaturizer, build_featurizers

PROPS = ["atom_z", "atom_degree", "atom_charge", "atom_chirality", "atom_hs", "atom_hybridization", "atom_aromatic"]


def atoms(**cols):
    base = {p: np.zeros(len(next(iter(cols.values()))), dtype=np.int64) for p in PROPS}
    base.update({k: np.asarray(v) for k, v in cols.items()})
    return base


@pytest.mark.parametrize("m", [35, 53, 80])
def test_paper_widths_match_method(m):
    a, b = build_featurizers("paper", m)
    assert len(a) == m + 27  # METHOD.md section 2
    assert len(b) == 13


def test_default_has_unknown_slots():
    a = AtomFeaturizer.default(35)
    codes = a.encode(atoms(atom_z=[6, 35, 53], atom_charge=[0, 3, -1]))
    # Br is in range (35), I is not: unknown slot = 35
    assert codes[:, 0].tolist() == [5, 34, 35]
    # charge vocab (-2,-1,0,1,2): +3 goes to the unknown slot 5
    assert codes[:, 2].tolist() == [2, 5, 1]


def test_paper_preset_reproduces_the_reference_quirk():
    a = AtomFeaturizer.paper(35)
    codes = a.encode(atoms(atom_z=[34, 35], atom_charge=[0, 3]))
    # Br (35) lands in the last real slot, the same as Se (34); charge +3 lands with 0 (last choice)
    assert codes[0, 0] == codes[1, 0] == 34
    assert codes[0, 2] == codes[1, 2] == 4


def test_dense_is_one_hot_plus_scalars():
    a = AtomFeaturizer.default()
    codes = torch.from_numpy(a.encode(atoms(atom_z=[6, 8], atom_aromatic=[1, 0], atom_hybridization=[3, 4])))
    d = a.dense(codes, torch.tensor([6, 8]))
    assert d.shape == (2, len(a))
    onehots = len(a.vocabs) - 1  # aromatic is binary
    # each one-hot block contributes 1, aromatic 0/1, mass*0.01 ~ 0.12 / 0.16
    assert torch.allclose(d.sum(1), torch.tensor([onehots + 1 + 0.12011, onehots + 0 + 0.15999]), atol=1e-3)
    with pytest.raises(ValueError, match="needs atomic numbers"):
        a.dense(codes)


def test_registries_know_presets_and_refuse_unknown():
    assert set(ATOM_FEATURIZERS.names()) == {"default", "paper"} == set(BOND_FEATURIZERS.names())
    with pytest.raises(Exception, match="could not resolve"):
        build_featurizers("papr")
    assert "width=" in repr(BondFeaturizer.default())
