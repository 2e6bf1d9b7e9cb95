"""``mfray study export``: a study's refits of one (task, setting, strategy) as a model folder that
``mfray predict`` scores new molecules with, as an ensemble of its split-seed models.

The folder::

    model.json      format, study, task, strategy, setting, members (checkpoint, split seed, run key, the
                    study's test metrics of that run), the LF checkpoint, and the test metrics' mean/std
    seed<k>.ckpt    one best-validation HF model per split seed (the study's refits)
    lf.ckpt         the LF model they read (predicted_label, hybrid_label, embeddings, delta inductively)
    config.toml     the resolved configuration the refits trained (``mfray train --config`` replays it)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mfray.predict.model import MODEL_FILE, MODEL_FORMAT
from mfray.results.store import ResultsStore
from mfray.run.study.plan import StudyPlan
from mfray.utils.errors import MfrayError
from mfray.utils.io import atomic_dir, write_json_atomic
from mfray.utils.location import Location

#: the strategy name of a study's per-task selection (see runner.SELECTED)
_SELECTED = "selected"


@dataclass
class Exported:
    out: Path
    strategy: str
    setting: str
    task: str
    members: list[dict[str, Any]]
    lf_checkpoint: str | None
    chosen_by: str | None = None  # "--best": what the study's selection chose and why


def _pick_task(df: pl.DataFrame, task: str) -> str:
    tasks = sorted(df["task"].unique().to_list())
    datasets = sorted(df["dataset"].unique().to_list())
    if task in tasks:
        return task
    by_dataset = sorted(df.filter(pl.col("dataset") == task)["task"].unique().to_list())
    if len(by_dataset) == 1:
        return by_dataset[0]
    raise MfrayError(f"--task {task!r}: not a task of this study's results; tasks: {', '.join(tasks)} "
                     f"(datasets: {', '.join(datasets)})")


def export_model(plan: StudyPlan, task: str, out: str | Path, *, strategy: str | None = None, best: bool = False,
                 setting: str | None = None) -> Exported:
    from mfray.results.report import latest_runs
    from mfray.transfer import MODEL_OUTPUTS, STRATEGIES, get_strategy

    if (strategy is None) == (not best):
        raise MfrayError("give --strategy NAME or --best (the study's selection for the task)")
    study = plan.study.name
    df = ResultsStore(plan.results.uri).read(study)
    if df.is_empty():
        raise MfrayError(f"study {study} has no finished runs under {plan.storage}")
    df = latest_runs(df)
    tname = _pick_task(df, task)
    rows = df.filter(pl.col("task") == tname)
    settings = sorted(rows["setting"].unique().to_list())
    if setting is None:
        if len(settings) > 1:
            raise MfrayError(f"task {tname} has runs in settings {settings}: choose one with --setting (inductive: "
                             "a model for molecules without a measured LF value)")
        setting = settings[0]
    elif setting not in settings:
        raise MfrayError(f"--setting {setting}: task {tname} has runs in {settings}")
    rows = rows.filter(pl.col("setting") == setting)
    chosen_by = None
    if best:
        sel = rows.filter(pl.col("strategy") == _SELECTED)
        if sel.is_empty():
            raise MfrayError(f"study {study} has no selection for {tname} ({setting}): its [selection] needs at least "
                             "two finished methods; export one with --strategy")
        strategy = sel["params_selected"][0]
        chosen_by = f"the study's selection for {tname} ({setting}): {strategy}"
        if strategy not in STRATEGIES.names():
            raise MfrayError(f"the study selected {strategy!r} for {tname} ({setting}), a classical baseline, not a "
                             "GNN model mfray predict can export; export a strategy with --strategy")
    present = sorted(set(rows["strategy"].unique().to_list()) - {_SELECTED})
    runs = rows.filter(pl.col("strategy") == strategy)
    if runs.is_empty():
        raise MfrayError(f"--strategy {strategy}: no finished runs of it for {tname} ({setting}); there are: "
                         f"{', '.join(present)}")
    if strategy not in STRATEGIES.names():
        raise MfrayError(f"--strategy {strategy}: a classical baseline, not a GNN model mfray predict can export")
    per_run = (runs.group_by("run_key").agg(pl.col("split_seed").first(), pl.col("readout").first())
               .sort("split_seed"))
    # tune_* carry the LF model's weights in their own checkpoints; only LF-model inputs need it beside them
    reads_lf_outputs = bool(get_strategy(strategy).needs(setting) & MODEL_OUTPUTS)
    members, lf_refs = [], set()
    for key, seed, _ in per_run.iter_rows():
        run_dir = plan.run_dir(key)
        ckpt = run_dir.child("best.ckpt")
        if not ckpt.exists():
            raise MfrayError(f"run {key} ({strategy}, split seed {seed}) kept no model ({ckpt} is missing): it finished "
                             "before studies kept their refits' checkpoints; delete its result part "
                             f"(results/study={study}/run-{key}.parquet) and run the study again to refit it")
        cfg = run_dir.child("config.json").read_json() if run_dir.child("config.json").exists() else {}
        test = runs.filter((pl.col("run_key") == key) & (pl.col("fold") == "test"))
        metrics = {m: (v if v is not None and np.isfinite(v) else None)  # JSON has no NaN
                   for m, v in zip(test["metric"].to_list(), test["value"].to_list())}
        members.append({"name": f"seed{seed}", "checkpoint": f"seed{seed}.ckpt", "split_seed": int(seed),
                        "run_key": key, "test_metrics": metrics, "_ckpt": ckpt, "_config": cfg})
        if cfg.get("lf_checkpoint") and reads_lf_outputs:
            lf_refs.add(cfg["lf_checkpoint"])
    if len(lf_refs) > 1:
        raise MfrayError(f"the {strategy} refits of {tname} read different LF models ({sorted(lf_refs)}); exporting "
                         "them as one ensemble is not supported (pretrain with [pretrain] holdout = \"always\")")
    lf_ref = next(iter(lf_refs), None)
    dest = Path(out)
    if dest.exists() and any(dest.iterdir()) and not (dest / MODEL_FILE).exists():
        raise MfrayError(f"--out {dest} exists and is not an mfray model folder: choose a new folder")
    with atomic_dir(dest) as tmp:
        for m in members:
            shutil.copyfile(Location(m["_ckpt"].uri).local_copy(), tmp / m["checkpoint"])
        if lf_ref:
            shutil.copyfile(Location(lf_ref).local_copy(), tmp / "lf.ckpt")
        config = members[0]["_config"].get("config") or {}
        if config:
            import tomli_w

            (tmp / "config.toml").write_text(tomli_w.dumps(_toml_safe({"strategy": strategy, "setting": setting,
                                                                       **config})))
        names = sorted({k for m in members for k in m["test_metrics"]})
        summary = {}
        for k in names:
            v = np.array([m["test_metrics"].get(k) for m in members], dtype=float)
            v = v[np.isfinite(v)]
            summary[k] = {"mean": float(v.mean()) if len(v) else None, "n": int(len(v)),
                          "std": float(v.std(ddof=1)) if len(v) > 1 else None}
        write_json_atomic(tmp / MODEL_FILE, {
            "format": MODEL_FORMAT, "study": study, "task": tname, "dataset": rows["dataset"][0], "strategy": strategy,
            "setting": setting, "chosen_by": chosen_by, "lf_checkpoint": "lf.ckpt" if lf_ref else None,
            "lf_checkpoint_source": lf_ref, "storage": str(plan.storage),
            "members": [{k: v for k, v in m.items() if not k.startswith("_")} for m in members],
            "test_metrics": summary})
    return Exported(out=dest, strategy=strategy, setting=setting, task=tname,
                    members=[{k: v for k, v in m.items() if not k.startswith("_")} for m in members],
                    lf_checkpoint=lf_ref, chosen_by=chosen_by)


def _toml_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _toml_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_toml_safe(v) for v in obj if v is not None]
    return obj
