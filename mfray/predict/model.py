"""A trained model ready to score new molecules: one HF checkpoint, or an ensemble of them, plus the LF
model its strategy reads, as the model saw its own molecules.

What a checkpoint's ``meta["inference"]`` (written by :func:`mfray.train.task.train_hf`) records is all
scoring needs: the SMILES recipe (standardisation + featuriser), which LF inputs the strategy reads, the
measured LF label's fidelity/target/transform, the LF checkpoint behind predictions and embeddings,
and a fitted offset (delta). The scalers travel in ``ckpt["scalers"]``.

A model location is one of:

- an HF checkpoint file (``best.ckpt`` of ``mfray train``), or its run folder;
- a model folder from ``mfray study export`` (``model.json``: one checkpoint per split seed, used
  as an ensemble, and the LF model they need);
- an LF checkpoint (``lf.ckpt`` of ``mfray pretrain``): it predicts its own LF target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mfray.chem.featurizers import build_featurizers
from mfray.models import MFModel
from mfray.models.checkpoint import load_model
from mfray.train.data import GraphDataset
from mfray.train.scaling import Scaler
from mfray.transfer import LFInput, get_strategy
from mfray.utils.errors import MfrayError

#: a model folder written by ``mfray study export``
MODEL_FILE = "model.json"
MODEL_FORMAT = "mfray-model/1"


@dataclass
class Member:
    """One HF model of an ensemble (or the only one)."""

    name: str
    model: MFModel
    ckpt: dict[str, Any]
    y_scaler: Scaler | None
    aux_scaler: Scaler | None
    offset: dict[str, Any] | None
    precision: str


@dataclass
class Scores:
    """What :meth:`Predictor.score` returns for ``n`` molecules (``T`` targets)."""

    mean: np.ndarray  # [n, T] in label units (classification: probability)
    std: np.ndarray | None  # [n, T] across ensemble members (None for one member)
    embedding: np.ndarray | None = None  # [n, G] graph embedding of the first member
    lf_source: list[str] | None = None  # per molecule, hybrid_label: "measured" or "predicted"


@dataclass
class Predictor:
    """A loaded model: members, LF model and what they need. Build with :func:`load_predictor`."""

    location: str
    kind: str  # "hf" | "lf"
    strategy: str | None
    setting: str | None
    targets: list[str]
    members: list[Member]
    recipe: dict[str, Any]
    needs: frozenset[LFInput] = frozenset()
    lf_fidelity: str | None = None
    lf_target: str | None = None
    lf_transform: str = "none"
    lf_model: tuple[MFModel, dict[str, Any]] | None = None
    lf_checkpoint: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # model.json of an exported folder

    @property
    def needs_lf_label(self) -> bool:
        return LFInput.LABEL in self.needs

    @property
    def lf_label_required(self) -> bool:
        """Every molecule must come with a measured LF value (label; delta transductively); hybrid_label
        takes the LF model's prediction where it has none."""
        return self.needs_lf_label and LFInput.PREDICTION not in self.needs

    def featurizers(self):
        return build_featurizers(self.recipe.get("featurizer", "default"), self.recipe.get("max_atomic_number"))

    def describe(self) -> str:
        what = (f"LF model ({', '.join(self.targets)})" if self.kind == "lf" else
                f"{self.strategy} ({self.setting}) model of {', '.join(self.targets)}")
        ens = f", an ensemble of {len(self.members)}" if len(self.members) > 1 else ""
        lf = f"; LF model {self.lf_checkpoint}" if self.lf_model is not None else ""
        return f"{what}{ens}{lf}"

    # ------------------------------------------------------------------ scoring
    def lf_outputs(self, data: GraphDataset, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The LF model's prediction of the task's LF target ``[n, 1]`` (label units) and embedding."""
        from mfray.train.task import lf_outputs_of

        assert self.lf_model is not None
        model, ckpt = self.lf_model
        pred, emb = lf_outputs_of(model, ckpt, data, batch_size)
        targets = ckpt.get("meta", {}).get("targets") or []
        col = targets.index(self.lf_target) if self.lf_target in targets else 0
        return pred[:, col:col + 1], emb

    def score(self, rows: pa.Table, lf_label: np.ndarray | None = None, *, batch_size: int = 256,
              embeddings: bool = False) -> Scores:
        """Score the graph rows ``rows`` (graph columns of :mod:`mfray.chem.graph`, any ``mol_id``).

        ``lf_label``: the measured LF values ``[n]`` in label units (NaN = none) for strategies that read
        them; the caller has dropped molecules that lack a value the strategy requires
        (:attr:`lf_label_required`)."""
        from mfray.train.task import predict_by_size

        n = rows.num_rows
        atom_f, bond_f = self.featurizers()
        plain = GraphDataset(rows, None, None, atom_f, bond_f)
        if n == 0:
            t = len(self.targets)
            return Scores(np.zeros((0, t), np.float32), None if len(self.members) == 1 else np.zeros((0, t), np.float32))
        lf: dict[LFInput, np.ndarray] = {}
        source = None
        if self.needs_lf_label:
            if lf_label is None:
                raise MfrayError(f"{self.location}: the {self.strategy} model reads the measured LF value "
                                 f"({self.lf_fidelity}/{self.lf_target}) of each molecule")
            lf[LFInput.LABEL] = np.asarray(lf_label, np.float32).reshape(n, 1)
        if self.needs & {LFInput.PREDICTION, LFInput.EMBEDDING}:
            pred, emb = self.lf_outputs(plain, batch_size)
            if LFInput.PREDICTION in self.needs:
                lf[LFInput.PREDICTION] = pred
            if LFInput.EMBEDDING in self.needs:
                lf[LFInput.EMBEDDING] = emb
        if LFInput.LABEL in lf and LFInput.PREDICTION in lf:
            source = np.where(np.isfinite(lf[LFInput.LABEL][:, 0]), "measured", "predicted").tolist()
        strategy = get_strategy(self.strategy) if self.strategy else None
        raw_aux = strategy.augment(lf, "input") if strategy is not None else None
        outs, emb_out = [], None
        for i, m in enumerate(self.members):
            aux = m.aux_scaler.transform(raw_aux) if raw_aux is not None and m.aux_scaler is not None else raw_aux
            data = GraphDataset(rows, None, aux.astype(np.float32) if aux is not None else None, atom_f, bond_f)
            pred, emb = predict_by_size(m.model, data, batch_size, m.precision, with_embeddings=embeddings and i == 0)
            if m.y_scaler is not None and m.model.spec.task_type == "regression":
                pred = m.y_scaler.inverse(pred)
            if m.offset is not None:
                pred = pred + strategy.apply_offset(m.offset, lf, "input")
            outs.append(pred.astype(np.float64))
            if i == 0:
                emb_out = emb
        stacked = np.stack(outs)
        std = stacked.std(axis=0, ddof=1) if len(outs) > 1 else None
        return Scores(stacked.mean(axis=0), std, emb_out, source)


# ---------------------------------------------------------------------------- loading
def _member(name: str, path: Path) -> Member:
    from mfray.train.task import trained_precision

    model, ckpt = load_model(path)
    scalers = ckpt.get("scalers") or {}
    inf = ckpt.get("meta", {}).get("inference") or {}
    return Member(name=name, model=model, ckpt=ckpt,
                  y_scaler=Scaler.from_dict(scalers["y"]) if scalers.get("y") else None,
                  aux_scaler=Scaler.from_dict(scalers["aux"]) if scalers.get("aux") else None,
                  offset=inf.get("offset"), precision=trained_precision(ckpt))


def _members_of(location: Path) -> tuple[list[tuple[str, Path]], dict[str, Any], Path | None]:
    """(member name, checkpoint) pairs, model.json (exported folders) and the folder's LF checkpoint."""
    if location.is_dir():
        info_path = location / MODEL_FILE
        if info_path.exists():
            try:
                info = json.loads(info_path.read_text())
            except json.JSONDecodeError as e:
                raise MfrayError(f"{info_path}: not valid JSON ({e})") from None
            if not isinstance(info, dict) or info.get("format") != MODEL_FORMAT or not info.get("members"):
                raise MfrayError(f"{info_path}: not an mfray model folder (format {MODEL_FORMAT!r} with members)")
            members = [(m["name"], location / m["checkpoint"]) for m in info["members"]]
            lf = location / info["lf_checkpoint"] if info.get("lf_checkpoint") else None
            return members, info, lf
        for name in ("best.ckpt", "lf.ckpt"):
            if (location / name).exists():
                return [(name, location / name)], {}, None
        raise MfrayError(f"{location}: no model here (expected {MODEL_FILE} from `mfray study export`, best.ckpt from "
                         "`mfray train` or lf.ckpt from `mfray pretrain`)")
    if not location.exists():
        raise MfrayError(f"{location}: model does not exist")
    return [(location.name, location)], {}, None


def load_predictor(location: str | Path, lf_checkpoint: str | Path | None = None) -> Predictor:
    """Load the model at ``location`` (see the module docstring). ``lf_checkpoint`` overrides the LF
    model the HF model recorded (e.g. after moving files)."""
    loc = Path(location)
    pairs, info, folder_lf = _members_of(loc)
    members = [_member(name, p) for name, p in pairs]
    first = members[0].ckpt
    meta = first.get("meta", {})
    kind = first.get("kind", "hf")
    for m in members[1:]:
        other = m.ckpt.get("meta", {})
        for k in ("strategy", "setting", "targets"):
            if other.get(k) != meta.get(k):
                raise MfrayError(f"{loc}: ensemble member {m.name} has {k} {other.get(k)!r}, {members[0].name} "
                                 f"{meta.get(k)!r}")
    if kind == "lf":
        recipe = (meta.get("inference") or {}).get("recipe")
        if recipe is None:
            raise MfrayError(f"{pairs[0][1]}: this LF checkpoint predates mfray predict (no recorded SMILES recipe); "
                             "pretrain it again")
        # an LF model scores its own targets from graphs alone
        for m in members:
            m.offset = None
            m.aux_scaler = None
        return Predictor(location=str(loc), kind="lf", strategy=None, setting=None,
                         targets=list(meta.get("targets") or []), members=members, recipe=recipe, info=info)
    inf = meta.get("inference")
    if inf is None:
        raise MfrayError(f"{pairs[0][1]}: this checkpoint predates mfray predict (it does not record how its inputs "
                         "were made); train it again with this version")
    needs = frozenset(LFInput(v) for v in inf.get("needs", []))
    pred = Predictor(location=str(loc), kind="hf", strategy=meta.get("strategy"), setting=meta.get("setting"),
                     targets=list(meta.get("targets") or []), members=members, recipe=inf["recipe"], needs=needs,
                     lf_fidelity=inf.get("lf_fidelity"), lf_target=inf.get("lf_target"),
                     lf_transform=inf.get("lf_transform") or "none", info=info)
    if needs & {LFInput.PREDICTION, LFInput.EMBEDDING}:
        lf_path = Path(lf_checkpoint) if lf_checkpoint else folder_lf
        if lf_path is None and inf.get("lf_checkpoint"):
            recorded = str(inf["lf_checkpoint"])
            lf_path = Path(recorded) if "://" not in recorded else None
            if lf_path is not None and not lf_path.exists():
                raise MfrayError(f"{loc}: the {pred.strategy} model reads the outputs of the LF model {recorded}, which "
                                 "is not there any more: give it with --lf-checkpoint")
        if lf_path is None:
            raise MfrayError(f"{loc}: the {pred.strategy} model reads an LF model's "
                             f"{'prediction' if LFInput.PREDICTION in needs else 'embedding'}: give its LF checkpoint "
                             "with --lf-checkpoint (mfray study export puts it in the model folder)")
        model, ckpt = load_model(lf_path)
        if ckpt.get("kind") != "lf":
            raise MfrayError(f"{lf_path}: not an LF checkpoint (kind {ckpt.get('kind')!r})")
        lf_recipe = (ckpt.get("meta", {}).get("inference") or {}).get("recipe")
        if lf_recipe is not None and lf_recipe != pred.recipe:
            raise MfrayError(f"{lf_path}: the LF model's molecules were made with another recipe than the HF model's "
                             f"({lf_recipe} vs {pred.recipe})")
        pred.lf_model = (model, ckpt)
        pred.lf_checkpoint = str(lf_path)
    return pred
