"""``mfray train`` / ``mfray pretrain`` / ``mfray embed``: one model in this process; ``mfray pretrain
--workers N`` runs data parallel on Ray Train (``mfray.run.pretrain``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path

from mfray.cli.common import (add_censored, add_store_root, apply_preset, at_least, epoch_progress, format_metrics,
                               freeze_stages, open_store, positive_float)


def _model_args(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--readout", metavar="NAME", help="a registered readout (sum, mean, max, sum_mean_max, set_transformer, "
                   "attention, deepsets, gmt; an unknown name lists them); default: the strategy's")
    g.add_argument("--encoder", metavar="NAME", help="gcn (default, supervised VGAE), gin or gine (plain GNNs)")
    g.add_argument("--hidden-dim", type=at_least(1), metavar="N", help="encoder hidden width (default 256)")
    g.add_argument("--latent-dim", type=at_least(1), metavar="N", help="VGAE latent width (default 50)")
    g.add_argument("--layers", type=at_least(1), metavar="N", help="encoder layers (default 3)")


def _train_args(p, verb: str, lr: float | None, batch: int, precision: str = "32", bucket: bool = False) -> None:
    from mfray.train.presets import CHOICES, RunPreset

    kind = "hf" if verb == "train" else "lf"
    cpu, paper = getattr(RunPreset.cpu(), kind), getattr(RunPreset.paper(), kind)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=at_least(1), metavar="N", help="maximum epochs (default: the preset's, "
                   + (f"{cpu['max_epochs']}" if cpu["max_epochs"] == paper["max_epochs"]
                      else f"cpu {cpu['max_epochs']}, paper {paper['max_epochs']}") + ")")
    g.add_argument("--lr", type=positive_float, default=lr, help="learning rate (default: "
                   + (f"{lr:g})" if lr is not None else "the strategy's, as in studies: 1e-4, 5e-5 for tune_*)"))
    g.add_argument("--batch-size", type=at_least(1), default=batch, metavar="N", help=f"default {batch}")
    g.add_argument("--patience", type=at_least(0), metavar="N", help="early-stopping patience in epochs, 0 = off (default: "
                   + ("off" if not cpu["patience"] and not paper["patience"]
                      else f"the preset's, cpu {cpu['patience']}, paper {paper['patience']}") + ")")
    g.add_argument("--threads", type=at_least(1), default=1, metavar="N", help="torch threads (default 1)")
    g.add_argument("--precision", choices=("32", "bf16-mixed", "auto"), default=precision,
                   help="forward passes in bf16 autocast (losses, weights, optimiser in fp32); auto = bf16-mixed where the "
                   f"CPU (AMX / AVX-512 BF16) or GPU has fast bf16, else 32 (default {precision})")
    g.add_argument("--bucket-by-size", action=argparse.BooleanOptionalAction, default=bucket,
                   help="batches of molecules of similar size (less attention padding; default "
                   f"{'on' if bucket else 'off'})")
    g.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute the readout's activations in the backward pass (less memory, more compute)")
    budget = (lambda r: f"at most {r.hf['max_epochs']} epochs, patience {r.hf['patience']}" if kind == "hf"
              else f"the {r.lf_size} LF size")
    g.add_argument("--preset", choices=CHOICES, default="auto",
                   help=f"defaults for a CPU or for the paper's protocol: cpu = a CPU budget ({budget(RunPreset.cpu())}), "
                   f"paper = the reference implementation's ({budget(RunPreset.paper())}); auto (default) = paper when "
                   "the run trains on GPUs, else cpu. Printed when the run starts; the flags above still apply")


#: the verbs' parsers (``mfray train --config`` sets the train parser's defaults from the file)
PARSERS: dict[str, argparse.ArgumentParser] = {}


def add_parser(sub) -> None:
    from mfray.transfer import STRATEGIES

    p = sub.add_parser("train", help="train one high-fidelity model for one split seed",
                       description="Train one HF model with a transfer strategy; write the resolved config, the "
                       "best-validation checkpoint, test predictions and metrics to --out.")
    p.add_argument("spec", metavar="DATA_SPEC", nargs="?", help="dataset spec file or name (default with --config: "
                   "the dataset the config names)")
    p.add_argument("--strategy", choices=STRATEGIES.names(), help="transfer strategy (required unless --config names one)")
    p.add_argument("--config", metavar="FILE", help="train again what a config file resolved: mfray train's config.toml, "
                   "a study's search best.json or refit config.json, an exported model's config.toml; flags given "
                   "win over it")
    p.add_argument("--seed", type=at_least(0, int, 2**32), help="split seed (default: the spec's first)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<dataset>/<strategy>/seed<seed>)")
    p.add_argument("--lf-checkpoint", metavar="CKPT", help="LF model from `mfray pretrain` (predicted_label, hybrid_label, embeddings, tune_*)")
    p.add_argument("--lf-prediction", metavar="KEY", help="use a stored LF prediction instead (e.g. artifact:STPredSD)")
    p.add_argument("--lf-embedding", metavar="KEY", help="use a stored LF embedding instead (e.g. artifact:STEmbeddings)")
    p.add_argument("--freeze", type=freeze_stages, metavar="STAGES", help="comma-separated stages to freeze (encoder,readout,head); default: the strategy's")
    p.add_argument("--unfreeze-epoch", type=at_least(0), metavar="N", help="unfreeze everything at this epoch")
    p.add_argument("--setting", choices=("transductive", "inductive"), default="transductive",
                   help="inductive: the valid/test molecules' measured LF labels are hidden (new molecules); the "
                   "LF model should not have seen them either (mfray pretrain --holdout-seeds)")
    add_censored(p)
    _model_args(p)
    _train_args(p, "train", lr=None, batch=32)
    p.add_argument("--no-progress", action="store_true")
    add_store_root(p)
    p.set_defaults(func=run_train)
    PARSERS["train"] = p

    q = sub.add_parser("pretrain", help="train a low-fidelity supervised VGAE (one process, or Ray Train with --workers)",
                       description="Pretrain an LF model on a dataset's low-fidelity labels; writes lf.ckpt. With "
                       "--workers N it runs data parallel on Ray Train, checkpointing every epoch; running the same "
                       "command again resumes the run from its last checkpoint.")
    q.add_argument("spec", metavar="DATA_SPEC")
    q.add_argument("--out", metavar="DIR", help="output folder (default runs/<dataset>/lf_<readout>)")
    q.add_argument("--max-molecules", type=at_least(10), metavar="N", help="pretrain on a seeded subsample")
    q.add_argument("--seed", type=at_least(0, int, 2**32), default=0)
    q.add_argument("--holdout-seeds", metavar="S1,S2", help="leave the valid and test molecules of these split seeds "
                   "out of pretraining (an LF model for the inductive setting); 'spec' = the dataset's seeds")
    _model_args(q)
    q.add_argument("--size", choices=("paper", "cpu"),
                   help="LF model size: paper (Set Transformer 1024 wide, 16 heads, 32 seeds, ~14 M parameters) or "
                   "cpu (256 wide, 8 heads, 8 seeds, ~1.2 M: several times faster on a laptop); default: the preset's")
    _train_args(q, "pretrain", lr=5e-5, batch=512, precision="auto", bucket=True)
    q.add_argument("--max-steps", type=at_least(1), metavar="N", help="at most N optimiser steps per epoch (per worker)")
    r = q.add_argument_group("Ray Train")
    r.add_argument("--workers", type=at_least(1), metavar="N", help="run on Ray Train with N data-parallel workers "
                   "(--batch-size is per worker); without it, pretraining runs in this process")
    r.add_argument("--use-gpu", action="store_true", help="one GPU per worker (NCCL); needs --workers")
    r.add_argument("--ray-storage", metavar="DIR_OR_URI", help="Ray Train storage for the run's checkpoints "
                   "(default <out>/ray; s3://... on a cluster)")
    r.add_argument("--max-failures", type=at_least(-1), default=0, metavar="N",
                   help="worker failures to recover from by resuming the last checkpoint (default 0)")
    q.add_argument("--no-progress", action="store_true")
    add_store_root(q)
    q.set_defaults(func=run_pretrain)

    e = sub.add_parser("embed", help="write an LF model's predictions and embeddings per molecule",
                       description="Batch inference with an LF checkpoint over a dataset's molecules; writes Parquet "
                       "(mol_id, prediction, embedding as fixed_size_list<float32>).")
    e.add_argument("checkpoint", metavar="CHECKPOINT")
    e.add_argument("spec", metavar="DATA_SPEC")
    e.add_argument("--out", metavar="FILE", required=True)
    e.add_argument("--fidelity", metavar="NAME", help="only molecules labelled at this fidelity (default: all)")
    add_store_root(e)
    e.set_defaults(func=run_embed)


def _model_overrides(args) -> dict:
    out = {}
    for a, k in (("encoder", "encoder"), ("hidden_dim", "hidden_dim"), ("latent_dim", "latent_dim"), ("layers", "num_layers")):
        v = getattr(args, a, None)
        if v is not None:
            out[k] = v
    if out.get("encoder") and out["encoder"] != "gcn":
        out["vgae"] = False
    return out


def _train_config(args, seed: int):
    from mfray.train.loop import TrainConfig

    kw = dict(lr=args.lr, batch_size=args.batch_size, max_epochs=args.epochs, patience=args.patience,
              seed=seed, num_threads=args.threads, precision=args.precision, bucket_by_size=args.bucket_by_size,
              activation_checkpointing=args.activation_checkpointing)
    replay = getattr(args, "replay", None)
    if replay is not None:  # --config: the file's settings, the flags' values over them
        return TrainConfig(**{**replay.train, **kw})
    return TrainConfig.paper(**kw) if getattr(args, "preset", "default") == "paper" else TrainConfig(**kw)


def _write_config(path: Path, obj: dict) -> None:
    import tomli_w

    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    path.write_text(tomli_w.dumps(clean(obj)))


def _check_holdout(checkpoint: str, seed: int) -> None:
    """Warn when an LF model for the inductive setting has seen this split's valid/test molecules."""
    import torch

    meta = torch.load(checkpoint, map_location="cpu", weights_only=True).get("meta", {})
    held = (meta.get("holdout") or {}).get("seeds") or []
    if seed not in held:
        print(f"warning: the LF model {checkpoint} was pretrained on split {seed}'s valid/test molecules, so this "
              f"inductive run is not inductive; pretrain it with --holdout-seeds {seed}", file=sys.stderr)


def run_train(args: argparse.Namespace) -> int:
    from mfray.data.tasks import load_task
    from mfray.train.task import HFRunConfig, train_hf

    from mfray.utils.errors import MfrayError

    if args.spec is None:
        raise MfrayError("give DATA_SPEC (a dataset spec file or name)" + (
            f": {args.config} does not name the dataset (a search's best.json does not)" if args.config else ""))
    if args.strategy is None:
        raise MfrayError("give --strategy NAME (or --config FILE that names one)")
    replay = getattr(args, "replay", None)
    apply_preset(args, "train", "cpu")  # trains in this process, on the CPU
    spec, store = open_store(args.spec, args.store_root)
    seed = args.seed if args.seed is not None else spec.split.seeds[0]
    task = load_task(store, seed, censored=args.censored or spec.task_policy()).for_setting(args.setting)
    model = {**(replay.model if replay else {}), **_model_overrides(args)}
    if replay and replay.strategy != args.strategy:  # another strategy builds another model: keep only its head
        model = {k: v for k, v in model.items() if k in ("head", "head_hidden_dim", "head_kwargs")} | _model_overrides(args)
    cfg = HFRunConfig(strategy=args.strategy, readout=args.readout, model=model,
                      train=_train_config(args, seed), lf_checkpoint=args.lf_checkpoint,
                      lf_prediction=args.lf_prediction, lf_embedding=args.lf_embedding,
                      freeze=[s for s in args.freeze.split(",") if s] if args.freeze is not None else None,
                      unfreeze_epoch=args.unfreeze_epoch)
    if args.setting == "inductive" and args.lf_checkpoint:
        _check_holdout(args.lf_checkpoint, seed)
    out = Path(args.out or Path("runs") / spec.name / args.strategy / f"seed{seed}")
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress and sys.stderr.isatty()
    print(f"{task.name}: {len(task.train)} train / {len(task.valid)} valid / {len(task.test)} test molecules, "
          f"seed {seed}, strategy {args.strategy}", file=sys.stderr)
    if args.censored and task.censored is None:
        print(f"note: --censored {args.censored} has no effect: the {task.fidelity} values of {spec.name} carry no "
              "qualifier (see qualifier_column in the dataset spec)", file=sys.stderr)
    if task.censored is not None:
        c = task.train.counts()
        print(f"  censored-label policy {task.censored!r}: training molecules with a fitted value {c['fitted']:,}, "
              f"with a bound {c['censored']:,} ({task.train.n_labelled(task.censored):,} used as labels)", file=sys.stderr)
    with epoch_progress(cfg.train.max_epochs, f"train {args.strategy}", progress, fidelity=task.fidelity.upper()) as cb:
        res = train_hf(task, cfg, out, on_epoch=cb, on_step=cb.on_step)
    _write_config(out / "config.toml", {
        "dataset": {"name": spec.name, "spec_path": spec.spec_path, "store": str(store.path), "seed": seed,
                    "targets": task.targets, "fidelity": task.fidelity, "censored": task.censored},
        "strategy": {"name": args.strategy, "setting": task.setting, "lf_checkpoint": args.lf_checkpoint,
                     "lf_prediction": args.lf_prediction, "lf_embedding": args.lf_embedding,
                     "freeze": list(res.freeze_plan.stages), "unfreeze_epoch": res.freeze_plan.unfreeze_epoch,
                     "lf_inputs": res.lf_inputs},
        "model": res.model_spec.model_dump(mode="json"),
        "train": asdict(res.train_config),
    })
    print(f"{args.strategy} on {task.name} (seed {seed}): best epoch {res.fit.best_epoch} of {res.fit.epochs_run}, "
          f"{res.n_trainable:,}/{res.n_params:,} trainable parameters, {res.fit.seconds:.0f} s")
    print(format_metrics(res.metrics))
    print(f"wrote {out}/: config.toml best.ckpt predictions.parquet metrics.json history.json")
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    from mfray.run.pretrain import peak_rss_mb
    from mfray.train.task import LFRunConfig, pretrain_lf
    from mfray.utils.errors import MfrayError

    if args.workers is not None and args.workers < 1:
        raise MfrayError(f"--workers must be at least 1 (got {args.workers})")
    if args.use_gpu and args.workers is None:
        raise MfrayError("--use-gpu runs on Ray Train: give --workers N as well")
    if args.max_steps is not None and args.max_steps < 1:
        raise MfrayError(f"--max-steps must be at least 1 (got {args.max_steps})")
    apply_preset(args, "pretrain", "cuda" if args.use_gpu else "cpu")
    spec, store = open_store(args.spec, args.store_root)
    readout = args.readout or "set_transformer"
    holdout = None
    if args.holdout_seeds:
        try:
            holdout = (list(spec.split.seeds) if args.holdout_seeds == "spec"
                       else [int(x) for x in args.holdout_seeds.split(",") if x.strip()])
        except ValueError:
            raise MfrayError(f"--holdout-seeds {args.holdout_seeds!r}: give split seeds like 1,2,3 or 'spec'") from None
    from mfray.models.spec import lf_preset

    model = {**lf_preset(args.size, readout), **_model_overrides(args)}  # flags win over the preset
    cfg = LFRunConfig(readout=readout, model=model,
                      train=replace(_train_config(args, args.seed), max_steps_per_epoch=args.max_steps),
                      max_molecules=args.max_molecules, holdout_seeds=holdout)
    out = Path(args.out or Path("runs") / spec.name / f"lf_{readout}")
    config = {"dataset": {"name": spec.name, "store": str(store.path)}, "readout": readout, "size": args.size,
              "model": model, "train": asdict(cfg.train), "max_molecules": args.max_molecules,
              "holdout_seeds": holdout}
    if args.workers is None:
        progress = not args.no_progress and sys.stderr.isatty()
        with epoch_progress(cfg.train.max_epochs, f"pretrain {readout}", progress, fidelity="LF") as cb:
            path, res = pretrain_lf(store, cfg, out, on_epoch=cb, on_step=cb.on_step)
        _write_config(out / "config.toml", config)
        epochs, best_epoch, best_loss, seconds = res.epochs_run, res.best_epoch, res.best_valid_loss, res.seconds
        history = [asdict(h) for h in res.history]
        memory = f"peak RSS {peak_rss_mb():.0f} MB (this process)"
        where = ""
    else:
        from mfray.run.pretrain import pretrain_lf_distributed, run_name

        storage = args.ray_storage or str(out / "ray")
        name = run_name(store, cfg, args.workers)
        config["ray"] = {"workers": args.workers, "use_gpu": args.use_gpu, "storage": storage, "name": name}
        dres = pretrain_lf_distributed(store.path, cfg, out, storage_path=storage, name=name, num_workers=args.workers,
                                       use_gpu=args.use_gpu, max_failures=args.max_failures,
                                       resources_per_worker={"CPU": args.threads} if args.threads > 1 else None,
                                       log=lambda m: print(m, file=sys.stderr))
        _write_config(out / "config.toml", config)
        path, epochs, best_epoch, best_loss, seconds = (dres.checkpoint, dres.epochs_run, dres.best_epoch,
                                                        dres.best_valid_loss, dres.seconds)
        history = dres.history
        memory = "peak RSS per worker " + ", ".join(f"{m:.0f}" for m in dres.peak_rss_mb) + " MB"
        where = (f" on {args.workers} Ray Train worker(s)"
                 + (f", resumed with {dres.resumed_from_epoch} epoch(s) done" if dres.resumed_from_epoch is not None else ""))
    last = history[-1]
    rates = [h["graphs_per_s"] for h in history if h.get("graphs_per_s")]
    print(f"pretrained {readout} LF model on {spec.name}{where}: {epochs} epochs, best epoch {best_epoch}, "
          f"valid MSE (scaled) {best_loss:.4f}, last train loss {last['train_loss']:.4f}, {seconds:.0f} s")
    print(f"throughput {sum(rates) / max(len(rates), 1):.0f} graphs/s (training, all workers, mean over epochs); {memory}")
    print(f"wrote {path}")
    return 0


def run_embed(args: argparse.Namespace) -> int:
    import polars as pl

    from mfray.train.task import embed_store, write_embeddings

    from mfray.models.checkpoint import load_checkpoint
    from mfray.utils.errors import MfrayError

    kind = load_checkpoint(args.checkpoint).get("kind")
    if kind != "lf":
        raise MfrayError(f"{args.checkpoint}: mfray embed runs LF models (lf.ckpt of mfray pretrain); this is an "
                         f"{kind!r} model: score molecules with it, and get its embeddings, with "
                         f"`mfray predict {args.checkpoint} INPUT.csv --embeddings`")
    spec, store = open_store(args.spec, args.store_root)
    ids = None
    if args.fidelity:
        fids = sorted(store.table("task_labels")["fidelity"].unique().to_list())
        if args.fidelity not in fids:
            raise MfrayError(f"--fidelity {args.fidelity!r}: {spec.name} has fidelities {fids}")
        ids = store.table("task_labels").filter(pl.col("fidelity") == args.fidelity)["mol_id"].unique().sort().to_numpy()
    counts = store.manifest.get("counts", {})
    if (ids is not None and len(ids) == 0) or counts.get("molecules", 1) == 0:
        raise MfrayError(f"{spec.name}: no molecules to embed ({counts.get('rows_quarantined', 0):,} rows quarantined; "
                         f"`mfray data show {args.spec}` lists why)")
    table = embed_store(args.checkpoint, store, ids)
    write_embeddings(table, args.out)
    print(f"wrote {table.num_rows:,} molecules ({table.schema.field('embedding').type}) to {args.out}")
    return 0
