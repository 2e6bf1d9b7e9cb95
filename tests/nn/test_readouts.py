"""Contract suite for every registered readout (new registrations join automatically)."""

from __future__ import annotations

import pytest
import torch

from mfray.nn import READOUTS, SetTransformerReadout, count_parameters
from mfray.utils.registry import RegistryError

D = 16
NAMES = READOUTS.names()


def build(name: str):
    torch.manual_seed(0)
    return READOUTS.build(name, in_dim=D)


def embed(sizes: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(sum(sizes), D, generator=g)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return h, batch


def test_registry_holds_the_required_readouts():
    assert {"sum", "mean", "max", "sum_mean_max", "set_transformer", "attention", "deepsets", "gmt"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_output_width_is_out_dim(name, graphs):
    readout = build(name).eval()
    mb = graphs.make_batch(graphs.molecules)
    h, batch = embed(mb.sizes)
    out = readout(h, batch, mb.num_graphs)
    assert out.shape == (mb.num_graphs, readout.out_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_permuting_atoms_within_a_molecule_does_not_change_its_vector(name, graphs):
    readout = build(name).eval()
    mb = graphs.make_batch([graphs.small, graphs.large, "c1ccccc1O"])
    h, batch = embed(mb.sizes)
    g = torch.Generator().manual_seed(2)
    perm, start = [], 0
    for n in mb.sizes:  # shuffle rows inside each molecule, keep molecules in order (batch stays sorted)
        perm.append(start + torch.randperm(n, generator=g))
        start += n
    perm = torch.cat(perm)
    assert not torch.equal(perm, torch.arange(len(perm)))
    with torch.no_grad():
        a = readout(h, batch, mb.num_graphs)
        b = readout(h[perm], batch[perm], mb.num_graphs)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_a_molecules_vector_does_not_depend_on_the_rest_of_the_batch(name, graphs):
    readout = build(name).eval()
    sizes = graphs.make_batch([graphs.small, graphs.large]).sizes
    h, _ = embed(sizes)
    small, large = h[: sizes[0]], h[sizes[0] :]
    with torch.no_grad():
        alone = readout(small, torch.zeros(sizes[0], dtype=torch.long), 1)
        # batched with a large molecule: padding of the small one grows from 0 to 37 rows
        first = readout(h, torch.repeat_interleave(torch.arange(2), torch.tensor(sizes)), 2)
        h2 = torch.cat([large, small, large])
        b2 = torch.repeat_interleave(torch.arange(3), torch.tensor([sizes[1], sizes[0], sizes[1]]))
        middle = readout(h2, b2, 3)
    torch.testing.assert_close(first[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(middle[1], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(middle[0], middle[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(middle[0], first[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_single_atom_molecule_and_batch_of_one(name, train):
    readout = build(name).train(train)
    h, batch = embed([1])
    out = readout(h, batch, 1)
    assert out.shape == (1, readout.out_dim) and torch.isfinite(out).all()
    h, batch = embed([1, 5, 1])  # single atoms next to a bigger molecule
    out = readout(h, batch, 3)
    assert out.shape == (3, readout.out_dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_nodes_and_every_parameter(name, graphs):
    readout = build(name).train()
    mb = graphs.make_batch(graphs.molecules)
    h, batch = embed(mb.sizes)
    h.requires_grad_(True)
    (readout(h, batch, mb.num_graphs) ** 2).sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    for pname, p in readout.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_reset_parameters_and_repr(name):
    readout = build(name)
    before = {k: v.clone() for k, v in readout.state_dict().items()}
    torch.manual_seed(123)
    readout.reset_parameters()
    after = readout.state_dict()
    weights = [k for k, v in before.items() if v.dim() >= 2]
    assert all(not torch.equal(before[k], after[k]) for k in weights)
    text = repr(readout)
    assert type(readout).__name__ in text and f"in_dim={D}" in text and f"out_dim={readout.out_dim}" in text
    assert "\n" not in text


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_width_is_a_clear_error(name):
    readout = build(name)
    h, batch = embed([3])
    with pytest.raises(ValueError, match=rf"expected h of shape \[N, {D}\]"):
        readout(h[:, :-1], batch, 1)
    with pytest.raises(ValueError, match="expected batch of shape"):
        readout(h, batch[:-1], 1)


def test_unknown_kwargs_are_refused():
    with pytest.raises(RegistryError, match="unknown argument"):
        READOUTS.build("set_transformer", in_dim=D, hiden_dim=8)
    with pytest.raises(RegistryError, match="unknown argument"):
        READOUTS.build("sum", in_dim=D, out_dim=8)


def test_fixed_readouts_compute_what_they_say():
    h, batch = embed([2, 3])
    parts = [h[:2], h[2:]]
    expect = torch.stack([torch.cat([p.sum(0), p.mean(0), p.max(0).values]) for p in parts])
    torch.testing.assert_close(READOUTS.build("sum_mean_max", in_dim=D)(h, batch, 2), expect)
    torch.testing.assert_close(READOUTS.build("sum", in_dim=D)(h, batch, 2), expect[:, :D])
    torch.testing.assert_close(READOUTS.build("mean", in_dim=D)(h, batch, 2), expect[:, D : 2 * D])
    torch.testing.assert_close(READOUTS.build("max", in_dim=D)(h, batch, 2), expect[:, 2 * D :])


def test_set_transformer_matches_the_paper_size():
    st = SetTransformerReadout(in_dim=50)
    assert st.out_dim == 256
    assert 13.5e6 < count_parameters(st) < 14.5e6  # paper: ~14 M


def test_set_transformer_padding_rows_take_no_part():
    """Garbage in the padding (were it ever read) would change the vector: feed the same molecule padded
    against molecules of very different sizes and with extreme values elsewhere in the batch."""
    torch.manual_seed(0)
    st = SetTransformerReadout(in_dim=D, hidden_dim=32, num_heads=4, num_seeds=4, out_dim=8).eval()
    h, _ = embed([4])
    with torch.no_grad():
        alone = st(h, torch.zeros(4, dtype=torch.long), 1)
        other = 1e3 * torch.randn(60, D)
        both = st(torch.cat([h, other]), torch.cat([torch.zeros(4), torch.ones(60)]).long(), 2)
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_hparams_rebuild_the_same_readout(name):
    readout = build(name)
    again = READOUTS.build(name, **readout.hparams)
    assert again.out_dim == readout.out_dim and repr(again) == repr(readout)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in readout.state_dict().items()}


def test_hparams_keep_non_default_widths():
    st = READOUTS.build("set_transformer", in_dim=D, hidden_dim=32, num_heads=4, num_seeds=2, out_dim=8)
    assert READOUTS.build("set_transformer", **st.hparams).out_dim == 8
    att = READOUTS.build("attention", in_dim=D, out_dim=5)
    assert READOUTS.build("attention", **att.hparams).out_dim == 5


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_graph_in_the_batch_gives_finite_output(name):
    readout = build(name).eval()
    h, _ = embed([3, 2])
    batch = torch.tensor([0, 0, 0, 2, 2])  # graph 1 has no nodes
    with torch.no_grad():
        out = readout(h, batch, 3)
        ref = readout(h[3:], torch.zeros(2, dtype=torch.long), 1)
    assert out.shape == (3, readout.out_dim) and torch.isfinite(out).all()
    torch.testing.assert_close(out[2], ref[0], atol=1e-5, rtol=1e-5)


def _st_pair():
    torch.manual_seed(0)
    st = SetTransformerReadout(in_dim=D, hidden_dim=32, num_heads=4, num_seeds=4, out_dim=8)
    return st


def test_packed_set_transformer_equals_the_padded_one():
    """The packed layout (dense maps on the N real rows, only attention padded) computes the same
    function as passing the whole padded block through every layer: outputs and every gradient."""
    st = _st_pair().train()
    h, batch = embed([1, 7, 3, 12, 2], seed=3)
    grads = {}
    outs = {}
    for packed in (True, False):
        st.packed = packed
        st.zero_grad()
        x = h.clone().requires_grad_(True)
        out = st(x, batch, 5)
        (out * torch.arange(out.numel()).view_as(out)).sum().backward()
        outs[packed] = out.detach()
        grads[packed] = [x.grad.clone()] + [p.grad.clone() for p in st.parameters()]
    torch.testing.assert_close(outs[True], outs[False], atol=1e-5, rtol=1e-4)
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_packing_moves_rows_between_layouts():
    from mfray.nn.readouts import Packing

    batch = torch.tensor([0, 0, 2, 2, 2])  # graph 1 has no nodes
    p = Packing(batch, 3)
    x = torch.arange(10.0).view(5, 2)
    d = p.dense(x)
    assert d.shape == (3, 3, 2) and p.max_len == 3
    assert d[0, :2].tolist() == x[:2].tolist() and d[2].tolist() == x[2:].tolist() and (d[1] == 0).all()
    assert p.mask.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    torch.testing.assert_close(p.packed(d), x)


@pytest.mark.parametrize("name", ["set_transformer"])
def test_activation_checkpointing_gives_the_same_gradients(name):
    st = _st_pair().train()
    h, batch = embed([4, 9, 2], seed=5)
    grads, kept = [], []
    for on in (False, True):
        st.set_checkpointing(on)
        st.zero_grad()
        saved = []  # bytes autograd keeps for the backward pass
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            out = st(h, batch, 3)
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in st.parameters()])
        kept.append(sum(saved))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert kept[1] < kept[0] / 3, kept  # checkpointed blocks keep their inputs only


def test_packed_set_transformer_maps_only_real_rows():
    """The encoder's dense maps see N node rows, not B x (largest molecule) padded rows; PMA projects
    its seeds once, not once per molecule."""
    st = _st_pair().eval()
    sizes = [1, 9, 2, 2]
    h, batch = embed(sizes, seed=2)
    rows = {}
    def count(name):
        def hook(mod, inputs, out):
            rows.setdefault(name, out.reshape(-1, out.size(-1)).size(0))
        return hook

    hooks = [m.register_forward_hook(count(name))
             for name, m in (("sab_fc_k", st.encoder[0].mab.fc_k), ("sab_fc_o", st.encoder[1].mab.fc_o),
                             ("pma_fc_q", st.pma.mab.fc_q), ("pma_fc_k", st.pma.mab.fc_k))]
    with torch.no_grad():
        st(h, batch, len(sizes))
    for hk in hooks:
        hk.remove()
    assert rows == {"sab_fc_k": sum(sizes), "sab_fc_o": sum(sizes), "pma_fc_q": 4, "pma_fc_k": sum(sizes)}, rows
