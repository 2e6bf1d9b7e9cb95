import numpy as np
import polars as pl
import pytest

from mfray.data.splits import FOLDS, make_splits, random_split, scaffold_split


def test_random_split_sizes_match_the_mfpcba_splits():
    folds = random_split(np.arange(655), seed=1)
    assert np.bincount(folds).tolist() == [524, 65, 66]


def test_split_does_not_depend_on_row_order():
    ids = np.random.default_rng(0).integers(-2**62, 2**62, size=500)
    a = dict(zip(ids, random_split(ids, seed=7)))
    shuffled = ids[::-1].copy()
    b = dict(zip(shuffled, random_split(shuffled, seed=7)))
    assert a == b
    assert a != dict(zip(ids, random_split(ids, seed=8)))


def test_scaffold_split_keeps_scaffolds_together():
    smiles = ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1CCC", "C1CCCCC1C", "C1CCCCC1CC", "c1ccncc1C",
              "c1ccncc1CC", "CCO", "CCN", "C1CC1C"] * 3
    ids = np.arange(len(smiles))
    folds = scaffold_split(ids, seed=0, fractions=(0.6, 0.2, 0.2), smiles=smiles)
    from mfray.data.splits import murcko_scaffold

    by_scaffold: dict[str, set[int]] = {}
    for s, f in zip(smiles, folds):
        by_scaffold.setdefault(murcko_scaffold(s) or s, set()).add(int(f))
    assert all(len(v) == 1 for v in by_scaffold.values())
    assert set(folds.tolist()) == {0, 1, 2}


def test_make_splits_table_has_every_seed():
    t = pl.from_arrow(make_splits("random", np.arange(100), [1, 2, 3], (0.8, 0.1, 0.1)))
    assert t.height == 300
    assert set(t["fold"].cast(pl.String).unique().to_list()) == set(FOLDS)
    with pytest.raises(ValueError, match="needs the molecules' SMILES"):
        make_splits("scaffold", np.arange(3), [1], (0.8, 0.1, 0.1))
