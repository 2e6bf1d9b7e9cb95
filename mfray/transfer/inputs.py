"""Where a task's LF inputs come from, resolved in one place for the GNN strategies and the baselines.

:class:`~mfray.transfer.base.LFInput` names what a strategy reads; :func:`resolve_lf_inputs` turns it
into per-fold arrays from one of three sources:

- ``LABEL``: the molecule's measured LF label (``task.folds[f].aux["lf_label"]``; NaN where the
  molecule has none, or where the inductive setting hides it);
- ``PREDICTION`` / ``EMBEDDING``: an LF model's outputs, either precomputed and joined to the task
  (an LF outputs table attached with ``load_task(aux_files={"lf": path})``, or the dataset's own
  ``artifact:`` columns), or computed from an LF checkpoint.

What is a prediction and what an embedding is read from the data's own description (the store
manifest's artifact kinds, the LF outputs table's column names), never guessed from array widths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from mfray.data.tasks import FOLD_NAMES, Task
from mfray.transfer.base import LFInput
from mfray.utils.errors import MfrayError

#: the aux prefix under which a study attaches its LF outputs table (``load_task(aux_files={LF_OUTPUTS: ...})``)
LF_OUTPUTS = "lf"
#: column names of an LF outputs table (``mfray embed``, a study's ``outputs.parquet``): ``prediction``
#: (one LF target) or ``prediction_<target>`` (several), and ``embedding`` (fixed_size_list<float32>)
PREDICTION_COLUMN = "prediction"
EMBEDDING_COLUMN = "embedding"


def prediction_column(target: str, n_targets: int) -> str:
    """The column of an LF outputs table holding the prediction of LF target ``target``."""
    return PREDICTION_COLUMN if n_targets == 1 else f"{PREDICTION_COLUMN}_{target}"


@dataclass(frozen=True)
class LFSources:
    """Where LF-model inputs come from: task aux keys, or an LF checkpoint (used when a key is None)."""

    prediction: str | None = None  # a task aux key, e.g. "artifact:STPredSD" or "lf:prediction"
    embedding: str | None = None  # e.g. "artifact:STEmbeddings" or "lf:embedding"
    checkpoint: str | None = None  # an LF model from `mfray pretrain` / a study


def outputs_sources(task: Task, prefix: str = LF_OUTPUTS) -> LFSources:
    """The keys of an LF outputs table attached to ``task`` under ``prefix``: the prediction of the
    task's LF target and the embedding."""
    keys = set(task.train.aux)
    single, named = f"{prefix}:{PREDICTION_COLUMN}", f"{prefix}:{PREDICTION_COLUMN}_{task.lf_target}"
    pred = named if named in keys else single if single in keys else None
    if pred is None and any(k.startswith(f"{prefix}:{PREDICTION_COLUMN}") for k in keys):
        raise MfrayError(f"{task.name}: the LF outputs have no prediction for LF target {task.lf_target!r}: "
                         f"{sorted(k for k in keys if k.startswith(prefix + ':'))}")
    emb = f"{prefix}:{EMBEDDING_COLUMN}"
    return LFSources(prediction=pred, embedding=emb if emb in keys else None)


def artifact_sources(task: Task) -> LFSources:
    """The first precomputed LF prediction and embedding the dataset ships (``[[source.artifacts]]``, in
    the spec's order), by the kind the spec declares."""
    arts = task.store.manifest.get("artifacts", {})
    first = lambda kind: next((f"artifact:{n}" for n, a in arts.items() if a.get("kind") == kind  # noqa: E731
                               and f"artifact:{n}" in task.train.aux), None)
    return LFSources(prediction=first("prediction"), embedding=first("embedding"))


def input_key(task: Task, inp: LFInput, sources: LFSources | None = None) -> str | None:
    """The task aux key ``inp`` is read from: the measured label's; else the key ``sources`` names, an
    attached LF outputs table's, or the dataset's artifact of that kind; None when there is none (then
    only an LF model can provide it)."""
    if inp is LFInput.LABEL:
        return "lf_label" if "lf_label" in task.train.aux else None
    sources = sources or LFSources()
    attached = outputs_sources(task) if any(k.startswith(f"{LF_OUTPUTS}:") for k in task.train.aux) else LFSources()
    shipped = artifact_sources(task)
    pick = (lambda s: s.prediction) if inp is LFInput.PREDICTION else (lambda s: s.embedding)  # noqa: E731
    return pick(sources) or pick(attached) or pick(shipped)


#: ``outputs(fold) -> (prediction of the task's LF target [n, 1] in label units, embeddings [n, G])``
LFModelOutputs = Callable[[str], tuple[np.ndarray, np.ndarray]]


def resolve_lf_inputs(task: Task, needs: Iterable[LFInput], sources: LFSources | None = None,
                      lf_model: LFModelOutputs | None = None
                      ) -> tuple[dict[str, dict[LFInput, np.ndarray]], dict[LFInput, str]]:
    """Per fold, the LF inputs ``needs`` as ``[n, d]`` float32 arrays, and where each came from.

    Args:
        task: the task (its folds' ``aux`` hold measured labels, artifacts and attached LF outputs).
        needs: the inputs to resolve.
        sources: task aux keys for predictions/embeddings; a None key falls back to ``lf_model`` when
            given, else to the dataset's artifacts (:func:`artifact_sources`).
        lf_model: computes an LF model's outputs for a fold (used when a key is None).
    """
    needs = set(needs)
    sources = sources or LFSources()
    out: dict[str, dict[LFInput, np.ndarray]] = {f: {} for f in FOLD_NAMES}
    origin: dict[LFInput, str] = {}
    if LFInput.LABEL in needs:
        if "lf_label" not in task.train.aux:
            raise MfrayError(f"{task.name}: the dataset has no lower-fidelity labels for the label strategies")
        for f in FOLD_NAMES:
            out[f][LFInput.LABEL] = task.folds[f].aux["lf_label"]
        origin[LFInput.LABEL] = f"measured {task.lf_fidelity}/{task.lf_target}"
    # an LF model given: it provides what no key names explicitly; else the data's own LF outputs do
    keys = {k: ((sources.prediction if k is LFInput.PREDICTION else sources.embedding) if lf_model is not None
                else input_key(task, k, sources)) for k in (LFInput.PREDICTION, LFInput.EMBEDDING)}
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for k in (LFInput.PREDICTION, LFInput.EMBEDDING):
        if k not in needs:
            continue
        key = keys[k]
        if key is not None:
            if key not in task.train.aux:
                raise MfrayError(f"{task.name}: no LF input {key!r}; available: {task.aux_names()}")
            for f in FOLD_NAMES:
                out[f][k] = task.folds[f].aux[key]
            origin[k] = key
            continue
        if lf_model is None:
            raise MfrayError(f"{task.name}: the strategy needs an LF model's {k.name.lower()}: give an LF checkpoint "
                             f"(--lf-checkpoint, from `mfray pretrain`) or an input key (available: {task.aux_names()})")
        for f in FOLD_NAMES:
            if f not in cache:
                cache[f] = lf_model(f)
            pred, emb = cache[f]
            out[f][k] = pred if k is LFInput.PREDICTION else emb
        origin[k] = f"LF checkpoint {sources.checkpoint}" if sources.checkpoint else "LF model"
    return out, origin
