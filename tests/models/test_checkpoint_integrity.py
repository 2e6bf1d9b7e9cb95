"""Issue 13, class 6: a checkpoint is checked on load: a flipped bit, weights that do not fit the stored
spec, or a missing state dict is a clear error, never a traceback or different predictions."""

from __future__ import annotations

import torch

import pytest

from mfray.models.checkpoint import content_hash, load_model, save_checkpoint
from mfray.models.model import build_model
from mfray.models.spec import ModelSpec
from mfray.utils.errors import MfrayError


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden_dim=16, latent_dim=8, head_hidden_dim=16))
    return save_checkpoint(tmp_path / "m.ckpt", model, kind="hf", meta={"note": "x"}), model


def test_a_saved_checkpoint_loads_and_carries_its_hash(ckpt):
    path, model = ckpt
    loaded, obj = load_model(path)
    assert obj["format"] == 2 and obj["sha256"] == content_hash(obj)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_a_flipped_bit_in_the_weights_is_refused(ckpt):
    path, model = ckpt
    data = bytearray(path.read_bytes())
    weight = max(model.state_dict().values(), key=lambda t: t.numel())
    at = bytes(data).find(weight.contiguous().view(torch.uint8).reshape(-1)[:64].numpy().tobytes())
    assert at > 0
    data[at + 37] ^= 0x10  # one bit of one weight
    path.write_bytes(bytes(data))
    raw = torch.load(path, weights_only=True)  # torch itself reads it without complaint
    assert not torch.equal(max(raw["state_dict"].values(), key=lambda t: t.numel()), weight)
    with pytest.raises(MfrayError, match="content does not match its recorded hash"):
        load_model(path)


def test_weights_that_do_not_match_the_spec(ckpt):
    path, _ = ckpt
    obj = torch.load(path, weights_only=True)
    obj["model_spec"]["head_hidden_dim"] = 32  # the spec now builds a wider head than the weights
    obj["sha256"] = content_hash(obj)
    torch.save(obj, path)
    with pytest.raises(MfrayError, match=r"the weights do not match the model spec stored with them: wrong shape"):
        load_model(path)


def test_a_missing_state_dict(ckpt):
    path, _ = ckpt
    obj = torch.load(path, weights_only=True)
    del obj["state_dict"]
    torch.save(obj, path)
    with pytest.raises(MfrayError, match="has no state dict"):
        load_model(path)


def test_an_unbuildable_spec(ckpt):
    path, _ = ckpt
    obj = torch.load(path, weights_only=True)
    obj["model_spec"]["encoder"] = "nope"
    obj["sha256"] = content_hash(obj)
    torch.save(obj, path)
    with pytest.raises(MfrayError, match="model spec cannot be built here"):
        load_model(path)
