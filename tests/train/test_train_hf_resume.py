"""``train_hf`` hands out fit states and continues from one exactly (what a restored search trial does)."""

from __future__ import annotations

import io

import numpy as np
import torch

from mfray.data.tasks import load_task
from mfray.train.loop import TrainConfig
from mfray.train.task import HFRunConfig, train_hf


def test_train_hf_resumes_exactly(demo_store):
    task = load_task(demo_store, demo_store.manifest["spec"]["split"]["seeds"][0])
    cfg = HFRunConfig(strategy="label", readout="sum", model={"hidden_dim": 16, "latent_dim": 8, "head_hidden_dim": 16},
                      train=TrainConfig(max_epochs=4, patience=0, batch_size=64, lr=1e-3, seed=3))
    states = []

    def keep(state):
        buf = io.BytesIO()
        torch.save(state, buf)  # what a Tune checkpoint does: the state goes through torch.save/load
        states.append(buf.getvalue())

    full = train_hf(task, cfg, checkpoint_every=2, on_checkpoint=keep)
    assert len(states) == 2  # after epoch 2 and after the last epoch
    mid = torch.load(io.BytesIO(states[0]), weights_only=True)
    resumed = train_hf(task, cfg, resume=mid)
    assert resumed.fit.epochs_run == full.fit.epochs_run == 4 and resumed.fit.best_epoch == full.fit.best_epoch
    for fold in ("valid", "test"):
        for m, v in full.metrics[fold].items():
            assert np.isclose(resumed.metrics[fold][m], v, rtol=0, atol=1e-6), (fold, m)
