"""``mfray baseline DATA_SPEC --model rf|svr|lf_linear``: a classical baseline over a dataset's split seeds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mfray.cli.common import at_least

METRICS = ("mae", "rmse", "r2", "pearson")


def add_parser(sub) -> None:
    from mfray.cli.common import add_censored

    from mfray.baselines import AUGMENTS, BASELINES

    p = sub.add_parser(
        "baseline", help="fit a classical baseline (RF, SVR, lf_linear) on every split seed",
        description="Fit a classical baseline on the training fold of each split seed, select its "
        "hyperparameters on the validation fold, and report test metrics per seed and their mean +- std. "
        "Writes metrics.json, predictions.parquet and the resolved config.toml to --out.",
    )
    p.add_argument("spec", metavar="DATA_SPEC", help="dataset spec file (.toml) or a dataset name from `mfray data list`")
    p.add_argument("--model", required=True, choices=BASELINES.names(), help="baseline")
    p.add_argument("--features", default="morgan", choices=["morgan", "rdkit2d"],
                   help="molecular descriptor (default morgan: radius 3, 2048 bits); lf_linear ignores it")
    p.add_argument("--augment", choices=sorted(AUGMENTS), help="append an LF input to the features")
    p.add_argument("--aux-key", metavar="KEY", help="the aux input to append instead of the augmentation's default "
                   "(e.g. artifact:SumPredSD); for lf_linear, the LF column to regress on (default lf_label)")
    p.add_argument("--seed", type=at_least(0, int, 2**32), action="append", metavar="N",
                   help="split seed, repeatable (default: every seed of the spec)")
    p.add_argument("--grid", default="reference", choices=["reference", "fast"],
                   help="hyperparameter grid (default reference, METHOD.md section 6)")
    p.add_argument("--jobs", type=at_least(1), default=1, metavar="N", help="parallel jobs (default 1)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<dataset>/baseline_<model>_<features>[_<augment>])")
    p.add_argument("--store-root", metavar="DIR", help="graph store root (default: $MFRAY_CACHE/graphs)")
    add_censored(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from mfray.baselines import BASELINES, CachedDescriptor, run_baseline
    from mfray.data.catalog import resolve_spec
    from mfray.data.tasks import load_task
    from mfray.run.featurize import featurize_dataset

    spec = resolve_spec(args.spec)
    res = featurize_dataset(spec, args.store_root, executor="local", progress=False, log=lambda m: None)
    store = res.store
    if not res.cache_hit:
        print(f"featurised {spec.name} -> {store.path}", file=sys.stderr)
    seeds = args.seed or list(spec.split.seeds)
    uses_descriptors = BASELINES.get(args.model).uses_descriptors
    features = args.features if uses_descriptors else None
    name = "_".join(x for x in ("baseline", args.model, features, args.augment) if x)
    out = Path(args.out or Path("runs") / spec.name / name)
    descriptor = CachedDescriptor(features) if features else None  # computed once across seeds

    results = []
    if args.censored and spec.task_policy() is None:
        print(f"note: --censored {args.censored} has no effect: the HF values of {spec.name} carry no qualifier "
              "(see qualifier_column in the dataset spec)", file=sys.stderr)
    for seed in seeds:
        task = load_task(store, seed, censored=args.censored or spec.task_policy())
        r = run_baseline(task, args.model, features=descriptor, augment=args.augment, aux_key=args.aux_key,
                         grid=args.grid, n_jobs=args.jobs)
        results.append(r)
        m = r.metrics["test"]
        print(f"  seed {seed}: test R2 {m['r2']:.3f}  MAE {m['mae']:.3f}  ({r.timings['total']:.1f} s, "
              f"{_params(r.best_params)})", file=sys.stderr)

    first = results[0]
    metrics = [k for k in (*METRICS, "censored_acc", "active_auroc") if k in first.metrics["test"]]
    summary = {k: {"mean": float(np.nanmean([r.metrics["test"][k] for r in results])),
                   "std": float(np.nanstd([r.metrics["test"][k] for r in results]))} for k in metrics}
    if task.censored is not None:
        print(f"censored-label policy {task.censored!r}: fitted on {first.search['fit_on']}; metrics: "
              "r2/mae/rmse/pearson on fitted test values, censored_acc and active_auroc on the bounds")
    label = f"{args.model}" + (f" on {features}" if features else "") + (f" + {first.aux_key}" if first.aux_key else "")
    print(f"{label}: {first.task}, grid {args.grid}, test metrics per split seed")
    print(f"  {'seed':>8}" + "".join(f"{k:>14}" for k in metrics))
    for r in results:
        print(f"  {r.split_seed:>8}" + "".join(f"{r.metrics['test'][k]:>14.4f}" for k in metrics))
    print(f"  {'mean':>8}" + "".join(f"{summary[k]['mean']:>14.4f}" for k in metrics))
    print(f"  {'std':>8}" + "".join(f"{summary[k]['std']:>14.4f}" for k in metrics))
    print("  " + "  ".join(f"{k.upper()} {summary[k]['mean']:.3f} +- {summary[k]['std']:.3f}" for k in metrics)
          + f"  (std over {len(results)} seeds, ddof 0)")

    config = {
        "dataset": {"name": spec.name, "spec_path": spec.spec_path, "store": str(store.path),
                    "split_seeds": seeds, "task": first.task, "censored": task.censored},
        "baseline": {"model": args.model, "features": features, "augment": args.augment, "aux_key": first.aux_key,
                     "grid": args.grid, "grid_values": BASELINES.build(args.model).grids[args.grid],
                     "random_state": first.seed, "jobs": args.jobs},
        "versions": _versions(),
    }
    _write(out, config, summary, results)
    print(f"wrote {out}/: metrics.json predictions.parquet config.toml")
    return 0


def _params(p: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items()) or "no hyperparameters"


def _versions() -> dict[str, str]:
    import sklearn

    import mfray

    return {"mfray": mfray.__version__, "sklearn": sklearn.__version__}


def _write(out: Path, config: dict, summary: dict, results: list) -> None:
    import json

    import numpy as np
    import polars as pl
    import tomli_w

    def clean(v):  # TOML has no null: an unset option is left out, a None in a grid axis is written "none"
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, (list, tuple)):
            return [clean(x) if x is not None else "none" for x in v]
        return v

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(tomli_w.dumps(clean(config)))
    metrics = {"summary": {"test": summary, "n_seeds": len(results), "std": "population (ddof 0) over split seeds"},
               "per_seed": [r.to_dict() for r in results]}
    (out / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2) + "\n")
    preds = pl.concat([
        pl.DataFrame({"mol_id": r.test_predictions.mol_ids.astype(np.int64),
                      "seed": np.full(len(r.test_predictions), r.split_seed, dtype=np.int64),
                      "y_true": r.test_predictions.y_true[:, 0], "y_pred": r.test_predictions.y_pred[:, 0]})
        for r in results])
    preds.write_parquet(out / "predictions.parquet")


def _finite(v):
    """JSON has no NaN: undefined metrics (e.g. R2 of a constant fold) become null."""
    import math

    import numpy as np

    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
