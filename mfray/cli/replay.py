"""``mfray train --config FILE``: train again what a run or a search resolved.

FILE is one of
- ``config.toml`` that ``mfray train`` wrote next to its model (dataset, strategy, model, train);
- ``best.json`` of a study search (``<storage>/search/<key>/best.json``: the best trial's resolved
  configuration; the dataset comes from DATA_SPEC, the LF model from ``--lf-checkpoint``);
- ``config.json`` of a study refit (``<storage>/runs/<run key>/config.json``) or ``config.toml`` of an
  exported model folder.

Flags given on the command line win over the file; everything the flags cannot say (the model's
readout options, the loss weights, ...) comes from the file.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfray.utils.errors import MfrayError

#: ModelSpec fields a strategy derives from the task and its inputs: never replayed
DERIVED_MODEL_FIELDS = ("n_targets", "aux_dim", "task_type", "featurizer", "max_atomic_number")


@dataclass
class Replay:
    """What a config file says, as ``mfray train`` takes it."""

    path: str
    spec: str | None = None
    seed: int | None = None
    strategy: str | None = None
    setting: str | None = None
    censored: str | None = None
    lf_checkpoint: str | None = None
    lf_prediction: str | None = None
    lf_embedding: str | None = None
    readout: str | None = None
    freeze: list[str] | None = None
    unfreeze_epoch: int | None = None
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def flag_defaults(self) -> dict[str, Any]:
        """argparse destinations of ``mfray train`` -> the file's values (flags given still win)."""
        t = self.train
        out = {"spec": self.spec, "seed": self.seed, "strategy": self.strategy, "setting": self.setting,
               "censored": self.censored, "lf_checkpoint": self.lf_checkpoint, "lf_prediction": self.lf_prediction,
               "lf_embedding": self.lf_embedding, "readout": self.readout,
               "freeze": ",".join(self.freeze) if self.freeze is not None else None,
               "unfreeze_epoch": self.unfreeze_epoch, "epochs": t.get("max_epochs"), "lr": t.get("lr"),
               "batch_size": t.get("batch_size"), "patience": t.get("patience"), "threads": t.get("num_threads"),
               "precision": t.get("precision"), "bucket_by_size": t.get("bucket_by_size"),
               "activation_checkpointing": t.get("activation_checkpointing")}
        return {k: v for k, v in out.items() if v is not None}


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise MfrayError(f"--config {path}: file does not exist")
    try:
        if path.suffix == ".json":
            obj = json.loads(path.read_text())
        elif path.suffix == ".toml":
            obj = tomllib.loads(path.read_text())
        else:
            raise MfrayError(f"--config {path}: give a config.toml (mfray train, mfray study export) or a "
                             "best.json / config.json (a study's search or refit)")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise MfrayError(f"--config {path}: not valid {path.suffix[1:].upper()} ({e})") from None
    if not isinstance(obj, dict):
        raise MfrayError(f"--config {path}: expected a table of settings")
    return obj


def _model(model: Any, path: Path) -> dict[str, Any]:
    if not isinstance(model, dict):
        raise MfrayError(f"--config {path}: 'model' must be a table")
    # the readout rides on --readout (a flag may change it); derived fields come from the task again
    return {k: v for k, v in model.items() if k not in DERIVED_MODEL_FIELDS and k != "readout"}


def _train(train: Any, path: Path) -> dict[str, Any]:
    from mfray.train.loop import TrainConfig

    if not isinstance(train, dict):
        raise MfrayError(f"--config {path}: 'train' must be a table")
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(train) - known)
    if unknown:
        raise MfrayError(f"--config {path}: unknown train key(s) {unknown}; known: {', '.join(sorted(known))}")
    return {k: v for k, v in train.items() if k != "seed"}  # the split seed decides it, as in mfray train


def load_replay(path: str | Path) -> Replay:
    p = Path(path)
    obj = _read(p)
    if "dataset" in obj and "strategy" in obj and isinstance(obj.get("strategy"), dict):  # mfray train's config.toml
        ds, st = obj["dataset"], obj["strategy"]
        return Replay(path=str(p), spec=ds.get("spec_path") or ds.get("name"), seed=ds.get("seed"),
                      strategy=st.get("name"), setting=st.get("setting"), censored=ds.get("censored"),
                      lf_checkpoint=st.get("lf_checkpoint"), lf_prediction=st.get("lf_prediction"),
                      lf_embedding=st.get("lf_embedding"), readout=(obj.get("model") or {}).get("readout"),
                      freeze=st.get("freeze"), unfreeze_epoch=st.get("unfreeze_epoch"),
                      model=_model(obj.get("model", {}), p), train=_train(obj.get("train", {}), p))
    config = obj.get("config") if isinstance(obj.get("config"), dict) else obj  # best.json / config.json / export
    if "strategy" not in config or "train" not in config:
        raise MfrayError(f"--config {p}: not an mfray run configuration (expected mfray train's config.toml, or a "
                         "study's best.json / config.json with 'strategy' and 'train')")
    return Replay(path=str(p), seed=obj.get("split_seed"), strategy=config["strategy"],
                  setting=obj.get("setting") or config.get("setting"), readout=config.get("readout"),
                  lf_checkpoint=obj.get("lf_checkpoint"), freeze=config.get("freeze"),
                  unfreeze_epoch=config.get("unfreeze_epoch"), model=_model(config.get("model") or {}, p),
                  train=_train(config["train"], p))
