"""``mfray featurize DATA_SPEC``: standardise and featurise a dataset once into a graph store."""

from __future__ import annotations

import argparse
import sys

from mfray.cli.common import at_least


def add_parser(sub) -> None:
    p = sub.add_parser(
        "featurize", aliases=["featurise"],
        help="featurise a dataset into a cached graph store",
        description="Read a dataset spec, standardise and featurise every molecule once (in this process "
        "for small datasets, with Ray Data for large ones), and write Parquet graph shards under a key of the "
        "source content and standardiser. A second run is a cache hit.",
    )
    p.add_argument("spec", metavar="DATA_SPEC", help="dataset spec file (.toml) or a dataset name from `mfray data list`")
    p.add_argument("--out", metavar="DIR", help="store root (default: $MFRAY_CACHE/graphs or ~/.cache/mfray/graphs)")
    p.add_argument("--workers", type=at_least(1), metavar="N", help="Ray workers (default: all CPUs of the Ray cluster)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="featurise in this process, without Ray, whatever the size")
    where.add_argument("--ray", action="store_true", help="featurise with Ray Data, whatever the size")
    p.add_argument("--local-below", type=at_least(0), metavar="ROWS",
                   help="without --local/--ray: featurise in this process when the source has fewer rows than this, "
                   "else with Ray Data (default $MFRAY_LOCAL_BELOW or 50000: below that, starting Ray costs more "
                   "than it saves; 0 = always Ray)")
    p.add_argument("--batch-size", type=at_least(1), default=2048, metavar="N", help="molecules per featurise task (default 2048)")
    p.add_argument("--force", action="store_true", help="rebuild even if the store exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def print_label_counts(counts: dict, indent: str = "  ") -> None:
    """Per label: molecules, and fitted / censored-below / censored-above where values carry a qualifier."""
    cens = counts.get("label_censoring", {})
    for lab, n in counts["labelled_molecules"].items():
        line = f"{indent}labelled {lab:<16} {n:>8,} molecules"
        c = cens.get(lab)
        if c and c.get("qualified"):
            line += (f"   fitted {c['fitted']:,} / censored-below {c['censored_below']:,} / "
                     f"censored-above {c['censored_above']:,}")
        print(line)
    if counts.get("bound_conflicts_dropped"):
        print(f"{indent}  {counts['bound_conflicts_dropped']:,} label(s) dropped: bounds in both directions and no fitted value")


def run(args: argparse.Namespace) -> int:
    from mfray.data.catalog import resolve_spec
    from mfray.run.featurize import featurize_dataset
    from mfray.utils.errors import MfrayError

    if args.workers is not None and args.workers < 1:
        raise MfrayError(f"--workers {args.workers}: give at least 1")
    if args.batch_size < 1:
        raise MfrayError(f"--batch-size {args.batch_size}: give at least 1")
    if args.local_below is not None and (args.local or args.ray):
        raise MfrayError(f"--local-below applies when mfray chooses; with --{'local' if args.local else 'ray'} "
                         "there is nothing to choose")
    spec = resolve_spec(args.spec)
    progress = not args.no_progress and sys.stderr.isatty()
    res = featurize_dataset(
        spec, args.out, executor="local" if args.local else "ray" if args.ray else "auto",
        local_below_rows=args.local_below, num_workers=args.workers,
        batch_size=args.batch_size, force=args.force, progress=progress,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    m = res.store.manifest
    c = m["counts"]
    if res.cache_hit:
        print(f"cache hit: {spec.name} is already featurised (key {m['key']}); nothing to do")
    else:
        t = m["timings_s"]
        print(f"featurised {spec.name} in {res.seconds:.1f} s "
              f"(read {t.get('read', 0):.1f} s, featurise {t.get('featurize', 0):.1f} s, finalise {t.get('finalize', 0):.1f} s; "
              f"{'in this process' if t.get('executor') == 'local' else 'Ray Data'})")
    print(f"  rows read         {c['rows_read']:>10,}")
    print(f"  rows stored       {c['rows_stored']:>10,}   -> {c['molecules']:,} molecules "
          f"({c['rows_merged']:,} rows were repeats of a stored molecule)")
    print(f"  rows quarantined  {c['rows_quarantined']:>10,}   -> {res.store.path / 'quarantine.parquet'}")
    for code, n in c["quarantine_by_code"].items():
        print(f"      {code:<22} {n:>8,}")
    print_label_counts(c)
    print(f"  split molecules   {c['split_molecules']:>10,}   ({spec.split.kind}, {len(spec.split.seeds)} seeds)")
    print(f"  store             {res.store.path}  ({m['graph_bytes'] / 1e6:.2f} MB graphs, "
          f"{m['bytes_per_molecule']} bytes/molecule)")
    return 0
