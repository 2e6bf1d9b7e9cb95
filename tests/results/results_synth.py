"""A synthetic study with known effects: 3 tasks x 4 strategies (base, lf_linear, label, embeddings) x 5 seeds."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from mfray.results import RunRecord, Versions

TASKS = {"aid1445:hf/DR": 0.30, "aid624330:hf/DR": 0.50, "qmugs:dft/gap": 0.70}  # base r2 per task
STRATEGIES = {  # strategy -> (model, readout, r2 effect over base per task)
    "base": ("gnn", "st", (0.0, 0.0, 0.0)),
    "lf_linear": ("lf_linear", None, (0.05, 0.10, -0.02)),
    "label": ("gnn", "st", (0.10, 0.15, 0.03)),
    "embeddings": ("gnn", "st", (0.04, -0.01, 0.02)),
}
SEEDS = range(5)
VERSIONS = Versions(mfray_version="0.1.0", git_sha="abc123", torch="2.13.0", ray="2.60.0", rdkit="2025.3.1")


def noise(ti: int, si: int, seed: int) -> float:
    """Deterministic, strategy-dependent seed noise (so paired tests are not degenerate)."""
    return 0.02 * np.sin(1.3 * seed + 0.7 * si + 0.4 * ti)


def r2_value(ti: int, si: int, seed: int) -> float:
    task = list(TASKS)[ti]
    strat = list(STRATEGIES)[si]
    return TASKS[task] + STRATEGIES[strat][2][ti] + noise(ti, si, seed)


def mae_value(ti: int, si: int, seed: int) -> float:
    return 1.0 - 0.8 * r2_value(ti, si, seed)


def records(study: str = "synth", params_extra: dict | None = None):
    out = []
    for ti, task in enumerate(TASKS):
        for si, (strat, (model, readout, _)) in enumerate(STRATEGIES.items()):
            for seed in SEEDS:
                params = {"lr": 1e-3, "model": {"hidden_dim": 64}} if model == "gnn" else {"fit_intercept": True}
                params |= params_extra or {}
                out.append(RunRecord(
                    study=study, task=task, dataset=task.split(":")[0], setting="transductive", strategy=strat,
                    model=model, readout=readout, split_seed=seed,
                    metrics={"test": {"r2": r2_value(ti, si, seed), "mae": mae_value(ti, si, seed)},
                             "valid": {"r2": r2_value(ti, si, seed) + 0.01}},
                    params=params, n_train_hf=100 + seed, best_epoch=10 if model == "gnn" else None,
                    trial_id=f"t{seed}", started_at=datetime(2025, 1, 1, tzinfo=UTC),
                    finished_at=datetime(2025, 1, 1, 1, tzinfo=UTC), versions=VERSIONS,
                ))
    return out


MANY_STRATEGIES = {  # strategy -> (model, readout): every method of a paper-sized study
    "base": ("gnn", "attention"), "label": ("gnn", "attention"), "hybrid_label": ("gnn", "attention"),
    "predicted_label": ("gnn", "attention"), "delta": ("gnn", "attention"), "embeddings": ("gnn", "attention"),
    "tune_vgae": ("gnn", "sum"), "tune_readout": ("gnn", "set_transformer"), "lf_linear": ("lf_linear", None),
    "rf": ("rf", None),
}
_PROTEINS = ("fatty_acid_synthase", "splicing", "serine_threonine_kinase_33", "tyrosyl_dna_phosphodiesterase",
             "m1_muscarinic_receptor_antagonists", "cytochrome_p450_3a4", "hsp90", "potassium_channel_kv7_2")


def many_task_records(n_tasks: int = 23, seeds: range = range(3), study: str = "many"):
    """``n_tasks`` tasks with long, realistic names x :data:`MANY_STRATEGIES` x ``seeds`` (r2 and mae on test)."""
    rng = np.random.default_rng(7)
    out = []
    for ti in range(n_tasks):
        task = f"{_PROTEINS[ti % len(_PROTEINS)]}_{ti}:hf/DR"
        base = rng.uniform(0.0, 0.6)
        for si, (strat, (model, readout)) in enumerate(MANY_STRATEGIES.items()):
            effect = 0.0 if strat == "base" else rng.normal(0.05, 0.08)
            for seed in seeds:
                r2 = base + effect + 0.03 * np.sin(1.7 * seed + si + ti)
                out.append(RunRecord(
                    study=study, task=task, dataset=task.split(":")[0], setting="transductive", strategy=strat,
                    model=model, readout=readout, split_seed=seed,
                    metrics={"test": {"r2": r2, "mae": 1.0 - 0.8 * r2}}, params={"lr": 1e-3}, n_train_hf=100,
                    trial_id=f"t{seed}", started_at=datetime(2025, 1, 1, tzinfo=UTC),
                    finished_at=datetime(2025, 1, 1, 1, tzinfo=UTC), versions=VERSIONS,
                ))
    return out
