"""Write the dataset specs of the 60 MF-PCBA datasets (data_specs/mfpcba/<name>.toml).

Reads the MF-PCBA table (default /work/shared/data/mfpcba_60.csv; columns name, sd_aid, dr_aid,
sd_columns and dr_columns ('|'-separated), transform_dr, in_paper_23, lf_max_atomic_number,
split_seeds ('|'-separated)) and writes one spec per row, retrieved from PubChem by the ``mfpcba``
source. Usage::

    python scripts/make_mfpcba_specs.py [--table mfpcba_60.csv] [--out data_specs/mfpcba]

Output is deterministic; each file is checked by loading it with :func:`mfray.data.specs.load_spec`.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from typing import Any

from mfray.data.specs import load_spec

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = Path("/work/shared/data/mfpcba_60.csv")
DEFAULT_OUT = REPO / "data_specs" / "mfpcba"
CITATION = (
    "Buterez D, Janet JP, Kiddle SJ, Liò P. MF-PCBA: Multifidelity High-Throughput Screening Benchmarks "
    "for Drug Discovery and Machine Learning. J. Chem. Inf. Model. 63(9):2667-2678 (2023), "
    "doi:10.1021/acs.jcim.2c01569"
)
#: the table writes transforms as MF-PCBA's retrieve scripts do ("pXC50"); the spec schema is lower-case
TRANSFORMS = {"pxc50": "pxc50", "minus": "minus", "no": "no"}
TRANSFORM_TEXT = {
    "pxc50": ", as pXC50 = -log10(XC50[uM] * 1e-6)",
    "minus": ", negated (-log XC50)",
    "no": "",
}


#: DR assay -> {DR column: its qualifier column}, read off the headers of the real PubChem data tables
#: (public repository JoshuaHesse/DataValuationPlatform, Experiments/Raw_data/AID_<AID>_datatable_all.csv,
#: commit 604b8f0; the AID 1431 and 624326 tables are in shared/data/pubchem_fixtures). Assays not
#: listed get dr_qualifier_columns = "auto" (the nearest "...Qualifier..." column at most two before
#: each DR column, PubChem's two layouts seen in these headers).
QUALIFIERS: dict[int, dict[str, str]] = {
    1053173: {"pAC50_M": "AC50_Qualifier"},
    1259375: {"LogIC50": "Qualifier"},
    1431: {"IC50 #1": "Qualifier"},
    1914: {"EC50": "EC50 Qualifier"},
    1960: {"EC50": "EC50 Qualifier"},
    2382: {"EC50": "EC50 Qualifier"},
    435004: {"Log_EC50_M": "EC50_Qualifier"},
    435010: {"Log_EC50_M": "EC50_Qualifier"},
    493155: {"IC50": "IC50_Qualifier"},
    588343: {"pAC50_M": "AC50_Qualifier"},
    602259: {"IC50_Mean": "IC50_Mean_Qualifier"},
    624326: {"IC50": "IC50_Qualifier"},
    624474: {"IC50_Mean": "IC50_Mean_Qualifier"},
    652116: {"pAC50_M": "AC50_Qualifier"},
    687027: {"pAC50_M": "AC50_Qualifier"},
    720512: {"pAC50_M": "AC50_Qualifier"},
    720632: {"pAC50_M": "AC50_Qualifier"},
    743267: {"pAC50_M": "AC50_Qualifier"},
}
#: DR assays whose table has no qualifier column (header checked): AID 489005 has only 'FitCategory_1'
NO_QUALIFIER = {489005}


def _reversed(dr_cols: list[str], transform: str) -> bool:
    """The qualifier is written on the potency in uM; a DR column that is already its negative log
    ('pAC50_M', 'pAbsAC1_M', taken as is) runs the other way. (Log_* columns with transform "minus"
    keep the potency's order before the transform flips it.)"""
    return transform == "no" and all(re.match(r"p(AC|Abs|IC|EC|XC)", c) for c in dr_cols)


def _toml(value: Any) -> str:
    """One TOML value: strings as basic strings (JSON escapes are valid TOML), lists on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _split(text: str) -> list[str]:
    return [part for part in text.split("|") if part != ""]


def spec_for(row: dict[str, str]) -> tuple[str, str]:
    """(file stem, TOML text) of one table row."""
    name = row["name"].strip()
    sd_aid, dr_aid = int(row["sd_aid"]), int(row["dr_aid"])
    sd_cols, dr_cols = _split(row["sd_columns"]), _split(row["dr_columns"])
    transform = TRANSFORMS[row["transform_dr"].strip().lower()]
    paper23 = row["in_paper_23"].strip().lower() == "true"
    max_z = row["lf_max_atomic_number"].strip()
    seeds = [int(s) for s in _split(row["split_seeds"])]
    if not sd_cols or not dr_cols or len(seeds) != 5:
        raise ValueError(f"MF-PCBA table row {name!r}: expected SD and DR columns and 5 split seeds")

    cols = lambda cs: ", ".join(f"'{c}'" for c in cs)  # noqa: E731
    where = (
        f"PubChem AID {sd_aid} holds both the primary single-dose screen and the dose-response"
        if sd_aid == dr_aid
        else f"primary single-dose screen PubChem AID {sd_aid}, dose-response AID {dr_aid}"
    )
    description = (
        f"MF-PCBA {name}: {where}. LF 'SD' = median of {cols(sd_cols)}; "
        f"HF 'DR' = median of {cols(dr_cols)}{TRANSFORM_TEXT[transform]}."
    )
    tags = ["mfpcba"] + (["paper23"] if paper23 else [])

    lines = [
        "# Generated by scripts/make_mfpcba_specs.py from mfpcba_60.csv: edit the table or the script, not this file.",
        f"name = {_toml('mfpcba_' + name)}",
        f"description = {_toml(description)}",
        'task_type = "regression"',
        'fidelities = ["lf", "hf"]',
        "# mean per PubChem CID, then the most active over stereoisomers (MF-PCBA)",
        'duplicates = "mfpcba"',
        f"tags = {_toml(tags)}",
        f"citation = {_toml(CITATION)}",
        "",
        "[source]",
        'kind = "mfpcba"',
        f"sd_aid = {sd_aid}",
        f"dr_aid = {dr_aid}",
        f"sd_columns = {_toml(sd_cols)}",
        f"dr_columns = {_toml(dr_cols)}",
        f"transform_dr = {_toml(transform)}",
    ]
    if dr_aid in NO_QUALIFIER:
        lines.append(f"# AID {dr_aid} has no qualifier column: every DR value is taken as fitted")
    else:
        quals = QUALIFIERS.get(dr_aid)
        if quals is not None:
            lines.append("# PubChem reports an inactive compound's potency as '>' the top concentration: a bound")
            lines.append("dr_qualifier_columns = { " + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in quals.items()) + " }")
        else:
            lines.append("# qualifier columns found in the table by PubChem's layout (header not checked here)")
            lines.append('dr_qualifier_columns = "auto"')
        if _reversed(dr_cols, transform):
            lines.append("dr_qualifier_reversed = true  # the qualifier is on the AC50 in uM; this column is -log10(M)")
        lines.append('censored = "censored"  # or "drop" / "as_value"; studies may override')
    lines += [
        "",
        "[standardize]",
        'preset = "mfpcba"',
        "",
        "[featurizer]",
        'preset = "default"',
    ]
    if max_z:
        lines.append(f"max_atomic_number = {int(max_z)}")
    lines += [
        "",
        "# the random 80/10/10 splits of the high-fidelity molecules with MF-PCBA's published seeds",
        "[split]",
        'kind = "random"',
        "fractions = [0.8, 0.1, 0.1]",
        f"seeds = {_toml(seeds)}",
        "",
    ]
    return name, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, default=DEFAULT_TABLE, help=f"MF-PCBA table (default {DEFAULT_TABLE})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = ap.parse_args(argv)
    with args.table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    args.out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        name, text = spec_for(row)
        path = args.out / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        load_spec(path)  # a spec that does not load is a bug here, not later
    print(f"wrote {len(rows)} specs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
