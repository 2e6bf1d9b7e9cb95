import numpy as np
import pytest

from mfray.chem.fingerprints import DESCRIPTORS, MorganFingerprint, RDKit2DDescriptors


def test_morgan_defaults_and_invalid_rows():
    fp = DESCRIPTORS.build("morgan")
    assert len(fp) == 2048 and fp.radius == 3
    x, ok = fp(["CCO", "c1ccccc1O", "not smiles", ""])
    assert x.shape == (4, 2048) and x.dtype == np.float32
    assert ok.tolist() == [True, True, False, False]
    assert x[0].sum() > 0 and x[2].sum() == 0
    assert not np.array_equal(x[0], x[1])
    small, _ = MorganFingerprint(radius=2, n_bits=64)(["CCO"])
    assert small.shape == (1, 64)


def test_rdkit2d_descriptors_are_finite():
    d = RDKit2DDescriptors()
    assert len(d) > 150 and "MolWt" in d.names
    x, ok = d(["CCO", "C" * 60, "bad("])
    assert ok.tolist() == [True, True, False]
    assert np.isfinite(x).all()
    mw = d.names.index("MolWt")
    assert x[0, mw] == pytest.approx(46.07, abs=0.01)
    with pytest.raises(ValueError, match="unknown RDKit descriptors"):
        RDKit2DDescriptors(["MolWt", "Nope"])
