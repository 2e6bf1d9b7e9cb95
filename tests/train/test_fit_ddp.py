"""The fit loop trains data parallel (DDP, gloo, 2 processes) with identical weights on every rank."""

import io
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mfray.data.store import GraphStore
from mfray.transfer import FreezePlan
from mfray.train.loop import TrainConfig, fit
from mfray.train.task import LFRunConfig, prepare_lf

SMALL = {"hidden_dim": 32, "latent_dim": 8, "head_hidden_dim": 32}
ST_SMALL = {"hidden_dim": 16, "num_heads": 2, "num_seeds": 2, "out_dim": 16}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _worker(rank: int, world_size: int, port: int, store_path: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        store = GraphStore(store_path)
        report = {}
        # 1. set transformer readout, checkpoints every epoch, then resume from the first one
        cfg = LFRunConfig(readout="set_transformer", model={**SMALL, "readout_kwargs": ST_SMALL},
                          train=TrainConfig(lr=1e-3, batch_size=24, max_epochs=3, patience=0), max_molecules=150)
        prep = prepare_lf(store, cfg, rank=rank, world_size=world_size)
        states = []
        res = fit(prep.model, prep.train, prep.valid, cfg.train, checkpoint_every=1,
                  on_checkpoint=lambda s: states.append(_roundtrip(s)))
        report["st"] = {"state": prep.model.state_dict(), "history": [vars(h) for h in res.history],
                        "n_train": len(prep.train), "n_rng": len(states[0]["rng"]), "world": res.world_size}
        again = prepare_lf(store, cfg, rank=rank, world_size=world_size)
        res2 = fit(again.model, again.train, again.valid, cfg.train, resume=states[0])
        report["resumed"] = {"state": again.model.state_dict(), "history": [vars(h) for h in res2.history]}
        # 2. frozen encoder unfrozen at epoch 1: DDP is re-wrapped over the new parameters
        cfg2 = LFRunConfig(readout="sum", model=SMALL, max_molecules=150,
                           train=TrainConfig(lr=1e-3, batch_size=24, max_epochs=2, patience=0))
        prep2 = prepare_lf(store, cfg2, rank=rank, world_size=world_size)
        enc0 = {k: v.clone() for k, v in prep2.model.encoder.state_dict().items()}
        last = []
        res3 = fit(prep2.model, prep2.train, prep2.valid, cfg2.train, on_checkpoint=lambda s: last.append(_roundtrip(s)),
                   freeze_plan=FreezePlan.of(["encoder"], unfreeze_epoch=1))
        report["unfreeze"] = {"state": prep2.model.state_dict(), "enc0": enc0, "last": last[0]["model"],
                              "history": [vars(h) for h in res3.history]}
        torch.save(report, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _losses(hist):
    return [(h["epoch"], h["train_loss"], h["valid_loss"], h["lr"]) for h in hist]


@pytest.mark.timeout(120)
def test_ddp_two_processes(demo_store, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(demo_store.path), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for key in ("st", "resumed", "unfreeze"):
        assert _same(r0[key]["state"], r1[key]["state"]), key  # parameters and BatchNorm statistics
        assert _losses(r0[key]["history"]) == _losses(r1[key]["history"]), key
    st = r0["st"]
    assert st["world"] == 2 and st["n_rng"] == 2 and abs(st["n_train"] - r1["st"]["n_train"]) <= 1
    hist = st["history"]
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["valid_loss"]) for h in hist)
    # graphs of both ranks are counted; both take the same number of steps
    assert hist[0]["graphs"] == st["n_train"] + r1["st"]["n_train"] and hist[0]["steps"] == 3
    # resuming the 2-process run from its epoch-0 state ends exactly where the uninterrupted run did
    assert _same(r0["resumed"]["state"], st["state"]) and _losses(r0["resumed"]["history"]) == _losses(hist)
    # the frozen encoder trained after unfreezing (last-epoch weights)
    uf = r0["unfreeze"]
    enc_now = {k[len("encoder."):]: v for k, v in uf["last"].items() if k.startswith("encoder.")}
    assert not _same(enc_now, uf["enc0"])


@pytest.mark.parametrize("encoder", ["gcn", "gine"])
def test_every_trainable_parameter_gets_a_gradient(demo_store, encoder):
    """Why DDP runs without find_unused_parameters: no registered readout/encoder leaves a trainable
    parameter out of the loss (frozen stages are not tracked by DDP at all)."""
    from mfray.models.freezing import train_mode
    from mfray.nn import READOUTS
    from mfray.train.loop import _batch_loss

    for readout in READOUTS.names():
        model_kw = {**SMALL, "encoder": encoder, "vgae": encoder == "gcn"}
        prep = prepare_lf(demo_store, LFRunConfig(readout=readout, model=model_kw, max_molecules=40))
        train_mode(prep.model)
        g, y, _, _ = prep.train.batch(torch.arange(len(prep.train)).numpy())
        loss, _ = _batch_loss(prep.model, g, y, None, TrainConfig(), vgae_terms=True)
        loss.backward()
        missing = [n for n, p in prep.model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, (readout, missing)
