"""``mfray data list`` / ``mfray data show NAME``: the known dataset specs."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="list and show dataset specs")
    dsub = p.add_subparsers(dest="data_verb", metavar="ACTION")
    dsub.required = True
    pl = dsub.add_parser("list", help="list the known dataset specs")
    pl.add_argument("--tag", help="only specs with this tag (e.g. paper23, local, demo)")
    pl.set_defaults(func=run_list)
    ps = dsub.add_parser("show", help="show one dataset spec: source, sizes, columns, fidelities, splits")
    ps.add_argument("name", metavar="NAME", help="dataset name or spec path")
    ps.add_argument("--json", action="store_true", help="print the resolved spec as JSON")
    ps.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mfray.data.catalog import list_specs, search_path

    entries = list_specs()
    if args.tag:
        entries = [e for e in entries if e.spec is not None and args.tag in e.spec.tags]
    table = Table(title=f"dataset specs ({len(entries)})", title_justify="left")
    for col in ("name", "source", "fidelities", "labels", "split", "tags"):
        table.add_column(col)
    for e in entries:
        if e.spec is None:
            table.add_row(e.name, "[red]invalid[/red]", "", (e.error or "").splitlines()[-1][:60], "", "")
            continue
        s = e.spec
        src = s.source
        if src.kind == "local":
            labels = ", ".join(sorted({f"{lab.fidelity}/{lab.target}" for lab in src.labels}))
        elif src.kind == "mfpcba":
            labels = f"lf/SD (AID {src.sd_aid}), hf/DR (AID {src.dr_aid})"
        else:
            labels = f"{len(src.properties)} properties x {'/'.join(s.fidelities)}"
        table.add_row(s.name, src.kind, " < ".join(s.fidelities), labels,
                      f"{s.split.kind} x{len(s.split.seeds)}", ",".join(s.tags))
    Console(width=200).print(table)
    print("search path: " + ", ".join(str(d) for d in search_path()))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from mfray.cli.featurize import print_label_counts
    from mfray.data.catalog import resolve_spec
    from mfray.data.sources import build_source
    from mfray.data.store import MANIFEST, default_root

    spec = resolve_spec(args.name)
    if args.json:
        print(json.dumps(spec.model_dump(mode="json"), indent=2))
        return 0
    print(f"{spec.name}: {spec.description}")
    print(f"  spec file     {spec.spec_path}")
    print(f"  task type     {spec.task_type}")
    print(f"  fidelities    {' < '.join(spec.fidelities)}  (split on {spec.split_fidelity})")
    print(f"  molecule key  {spec.molecule_key}   duplicates: {spec.duplicates}")
    src = spec.source
    print(f"  source        {src.kind}")
    source = build_source(spec)
    desc = source.describe()
    if src.kind == "local":
        for key, f in desc["files"].items():
            size = f"{f['size_mb']} MB" if f["exists"] else "MISSING"
            print(f"    file {key}: {f['path']} ({size}); smiles column {f['smiles_column']!r}"
                  + (f", id column {f['id_column']!r}" if f["id_column"] else ""))
        for lab in src.labels:
            tr = f" ({lab.transform})" if lab.transform != "none" else ""
            q = ""
            if lab.qualifier_column:
                q = (f"; qualifier {lab.qualifier_column!r}" + (" (written on the reversed quantity)" if lab.qualifier_reversed else "")
                     + f", censored = {lab.censored!r}")
            print(f"    label {lab.fidelity}/{lab.target} <- {lab.file}[{lab.column!r}]{tr}{q}")
        for art in src.artifacts:
            print(f"    artifact {art.name} ({art.kind}) <- {art.file}[{art.column!r}]")
    else:
        for k, v in desc.items():
            if k == "kind":
                continue
            if isinstance(v, dict):
                print(f"    {k}:")
                for kk, vv in v.items():
                    text = ", ".join(f"{a}={b}" for a, b in vv.items()) if isinstance(vv, dict) else vv
                    print(f"      {kk}: {text}")
            else:
                print(f"    {k}: {v}")
    st = spec.standardize.resolved()
    print(f"  standardize   {spec.standardize.preset}: " + ", ".join(f"{k}={v}" for k, v in st.items() if v not in (None, False)))
    print(f"  featurizer    {spec.featurizer.preset}" + (f", max_atomic_number={spec.featurizer.max_atomic_number}" if spec.featurizer.max_atomic_number else ""))
    fr = spec.split.fractions
    print(f"  split         {spec.split.kind} {fr[0]:.0%}/{fr[1]:.0%}/{fr[2]:.0%}, seeds {spec.split.seeds}")
    if spec.tags:
        print(f"  tags          {', '.join(spec.tags)}")
    if spec.citation:
        print(f"  citation      {spec.citation}")
    # sizes and label counts, if this spec's store was built under the default root
    from mfray.data.featurize import extractor_for
    from mfray.data.store import store_key
    from mfray.utils.errors import MfrayError

    try:
        path = default_root() / spec.name / store_key(spec, source.fingerprint(), extractor_for(spec).spec())
    except MfrayError as e:
        path = None
        print(f"  featurised    no: {e}")
    if path is not None and (path / MANIFEST).exists():
        c = json.loads((path / MANIFEST).read_text())["counts"]
        print(f"  featurised    {c['molecules']:,} molecules from {c['rows_read']:,} rows "
              f"({c['rows_quarantined']:,} quarantined) at {path}")
        print_label_counts(c, indent="    ")
    elif path is not None:
        print(f"  featurised    not yet (run `mfray featurize {spec.name}`)")
    return 0
