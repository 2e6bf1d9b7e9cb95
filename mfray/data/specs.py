"""Dataset specs: where a dataset's molecules and labels come from, and how they are prepared.

A spec is a TOML file validated into frozen pydantic models. Unknown keys and wrong types are errors
that name the file, the key and what is allowed. Relative paths in a spec are relative to the spec
file's folder; ``$VARS`` and ``~`` are expanded, so private data can live outside the repository
(``path = "$AZ_DATA/assay_17_primary.csv"``).

Example (a local two-fidelity dataset)::

    name = "my_assay"
    task_type = "regression"
    fidelities = ["lf", "hf"]
    duplicates = "mean"

    [source]
    kind = "local"

    [source.files.primary]
    path = "$AZ_DATA/primary.csv.gz"
    smiles_column = "SMILES"
    id_column = "Compound ID"

    [[source.labels]]
    fidelity = "lf"
    target = "activity"
    file = "primary"
    column = "Z-Score"

    [split]
    kind = "random"
    seeds = [1, 2, 3, 4, 5]
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mfray.utils.errors import SpecError
from mfray.utils.hashing import hash_obj
from mfray.utils.io import read_toml_file

#: fidelity and target names: they become column names and are written "fidelity:target" on the command
#: line and in study specs, so a colon (or a space, or a slash) would split or break them
LabelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$", min_length=1, max_length=64)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- sources
Transform = Literal["none", "pxc50_from_um", "neg_log10", "log10", "minus"]
#: +1: the transform keeps the order of values; -1: it reverses it (a bound's direction flips). A
#: transform missing here cannot carry a censored label (a spec that tries is an error).
TRANSFORM_DIRECTION: dict[str, int] = {"none": 1, "log10": 1, "pxc50_from_um": -1, "neg_log10": -1, "minus": -1}

#: what a censored label value (a bound, e.g. PubChem's '>' on the potency of an inactive compound) is:
#: ``drop``: not a label (only fitted values are; the molecule stays, e.g. for its LF label and in the
#: split); ``as_value``: the bound used as if it were measured (MF-PCBA's "default pXC50" variant);
#: ``censored``: a bound with a direction, used by training (one-sided loss) and evaluation.
CensoredPolicy = Literal["drop", "as_value", "censored"]
CENSORED_POLICIES: tuple[str, ...] = ("drop", "as_value", "censored")


class FileSpec(_Spec):
    """One tabular input file (CSV/TSV, optionally gzipped, or Parquet)."""

    path: str
    smiles_column: str
    id_column: str | None = None
    format: Literal["auto", "csv", "tsv", "parquet"] = "auto"
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    encoding: str = "utf-8"


class LabelSpec(_Spec):
    """A numeric label column: one (fidelity, target) pair read from one file."""

    fidelity: LabelName
    target: LabelName
    file: str
    column: str
    transform: Transform = "none"
    #: a column of '=' / '>' / '<' ... qualifying this label's values ('', '=', '~': a fitted value;
    #: '>', '>=', '<', '<=': a bound); needs ``censored``
    qualifier_column: str | None = None
    #: the qualifier was written on a quantity that runs opposite to this column's values, e.g. PubChem's
    #: '>' on an IC50 next to a column already converted to pXC50 (then '>' means "pXC50 below the bound")
    qualifier_reversed: bool = False
    censored: CensoredPolicy | None = None

    @model_validator(mode="after")
    def _qualifier(self) -> LabelSpec:
        check_censoring(self.qualifier_column, self.censored, self.transform, self.qualifier_reversed)
        return self

    @property
    def direction(self) -> int:
        """+1 when a '>' qualifier means "the stored value is a lower bound", -1 when it means an upper one."""
        return TRANSFORM_DIRECTION[self.transform] * (-1 if self.qualifier_reversed else 1)


def check_censoring(qualifier: Any, policy: str | None, transform: str, reversed_: bool = False,
                    qualifier_key: str = "qualifier_column") -> None:
    """A qualifier needs a policy and a policy a qualifier; a bound's direction must survive the transform."""
    if qualifier and policy is None:
        raise ValueError(f"{qualifier_key} is set but censored is not: say what a bound is "
                         f"(censored = {' | '.join(repr(p) for p in CENSORED_POLICIES)})")
    if policy is not None and not qualifier:
        raise ValueError(f"censored = {policy!r} needs {qualifier_key} (the column saying which values are bounds)")
    if reversed_ and not qualifier:
        raise ValueError(f"qualifier_reversed needs {qualifier_key}")
    if qualifier and transform not in TRANSFORM_DIRECTION:
        raise ValueError(f"transform {transform!r} cannot say which way a bound points, so a censored label "
                         f"cannot use it; transforms that can: {', '.join(TRANSFORM_DIRECTION)}")


class ArtifactSpec(_Spec):
    """A precomputed low-fidelity model output shipped with the data (prediction or embedding)."""

    name: str
    file: str
    column: str
    kind: Literal["prediction", "embedding"]


class LocalSource(_Spec):
    """Local CSV/Parquet files with a column mapping (how private AZ-style data comes in)."""

    kind: Literal["local"] = "local"
    files: dict[str, FileSpec]
    labels: list[LabelSpec]
    artifacts: list[ArtifactSpec] = []

    @model_validator(mode="after")
    def _refs(self) -> LocalSource:
        if not self.files:
            raise ValueError("source.files: at least one file is required")
        if not self.labels:
            raise ValueError("source.labels: at least one label column is required")
        for where, items in (("labels", self.labels), ("artifacts", self.artifacts)):
            for i, item in enumerate(items):
                if item.file not in self.files:
                    raise ValueError(
                        f"source.{where}[{i}].file = {item.file!r} is not one of the files "
                        f"{sorted(self.files)}"
                    )
        seen: set[tuple[str, str, str]] = set()
        for i, lab in enumerate(self.labels):
            key = (lab.file, lab.fidelity, lab.target)
            if lab.qualifier_column is not None and lab.qualifier_column == lab.column:
                raise ValueError(f"source.labels[{i}]: qualifier_column is the label column itself ({lab.column!r})")
            if key in seen:
                raise ValueError(
                    f"source.labels[{i}]: ({lab.fidelity}, {lab.target}) is read twice from file {lab.file!r}"
                )
            seen.add(key)
        return self


class MfpcbaSource(_Spec):
    """An MF-PCBA pair retrieved from PubChem PUG-REST (primary SD screen -> dose-response DR)."""

    kind: Literal["mfpcba"] = "mfpcba"
    sd_aid: int
    dr_aid: int
    sd_columns: list[str]
    dr_columns: list[str]
    transform_dr: Literal["pxc50", "minus", "no"]
    cache_dir: str = "$MFRAY_CACHE/pubchem"
    #: AID -> a pre-downloaded PubChem data table (CSV, optionally .gz) read instead of PUG-REST,
    #: for offline use; e.g. ``[source.local_tables]`` then ``873 = "$DATA/AID_873_datatable_all.csv"``.
    local_tables: dict[int, str] = {}
    #: DR column -> the column qualifying it in the PubChem table ('=', '>', '<': PubChem reports an
    #: inactive compound's potency as '>' the highest tested concentration, a bound, not a measurement);
    #: "auto": the nearest column at most two before each DR column whose name holds "qualifier"
    #: (PubChem's layouts: 'IC50_Qualifier, IC50' and 'AC50_Qualifier, AC50_uM, pAC50_M'); none where
    #: there is no such column (then every value is taken as fitted)
    dr_qualifier_columns: dict[str, str] | Literal["auto"] | None = None
    #: the qualifiers were written on the potency (XC50 in uM) while the DR columns hold its negative
    #: log (e.g. NCATS' 'pAC50_M' next to 'AC50_Qualifier'): '>' on the AC50 means pAC50 below the bound
    dr_qualifier_reversed: bool = False
    #: what a bound is (see ``LabelSpec.censored``); needs dr_qualifier_columns
    censored: CensoredPolicy | None = None

    @model_validator(mode="after")
    def _qualifiers(self) -> MfpcbaSource:
        if isinstance(self.dr_qualifier_columns, dict):
            unknown = sorted(set(self.dr_qualifier_columns) - set(self.dr_columns))
            if unknown:
                raise ValueError(f"dr_qualifier_columns: {unknown} are not DR columns {self.dr_columns}")
        transform = {"pxc50": "pxc50_from_um", "minus": "minus", "no": "none"}[self.transform_dr]
        check_censoring(self.dr_qualifier_columns, self.censored, transform, self.dr_qualifier_reversed,
                        qualifier_key="dr_qualifier_columns")
        return self

    @model_validator(mode="after")
    def _local_aids(self) -> MfpcbaSource:
        extra = sorted(set(self.local_tables) - {self.sd_aid, self.dr_aid})
        if extra:
            raise ValueError(
                f"source.local_tables: AID(s) {extra} are neither sd_aid ({self.sd_aid}) nor dr_aid ({self.dr_aid})"
            )
        return self


QMUGS_PROPERTIES = (
    "TOTAL_ENERGY", "ATOMIC_ENERGY", "FORMATION_ENERGY", "HOMO_ENERGY", "LUMO_ENERGY",
    "ROT_CONSTANT_A", "ROT_CONSTANT_B", "ROT_CONSTANT_C", "DIPOLE_X", "DIPOLE_Y", "DIPOLE_Z",
    "DIPOLE_TOT",
)


class QmugsSource(_Spec):
    """QMugs summary.csv (GFN2-xTB = LF, DFT wB97X-D/def2-SVP = HF) keyed by (chembl_id, conf_id)."""

    kind: Literal["qmugs"] = "qmugs"
    summary_csv: str
    properties: list[str] = list(QMUGS_PROPERTIES)
    #: per column (GFN2_<P> and DFT_<P> separately), values more than this many standard deviations
    #: from the column mean (one pass over the whole file) are set to null and counted; null = keep all
    outlier_sd: float | None = Field(default=5.0, gt=0)
    #: published split index files (``chembl_id, conf_id`` CSVs, one per fold: train_8K.csv ...
    #: val_1K.csv, test_1K.csv), a folder or one file; read by ``sources.qmugs.load_qmugs_split_index``.
    #: null = split with ``[split]`` instead
    split_index: str | None = None
    #: with ``split.kind = "predefined"``: the published training set used as the train fold
    #: (``train_8K`` ... ``train_300K``; ``whole`` = every conformer in neither val_1K nor test_1K)
    split_train: str | None = None

    @field_validator("properties")
    @classmethod
    def _props(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in QMUGS_PROPERTIES]
        if bad:
            raise ValueError(f"unknown QMugs properties {bad}; allowed: {list(QMUGS_PROPERTIES)}")
        return v


SourceSpec = Annotated[LocalSource | MfpcbaSource | QmugsSource, Field(discriminator="kind")]


# ---------------------------------------------------------------- preparation
class StandardizeSpec(_Spec):
    """SMILES standardisation (METHOD.md section 8). ``preset`` fills the steps; steps may override."""

    preset: Literal["mfpcba", "minimal"] = "mfpcba"
    largest_fragment: bool | None = None
    remove_stereo: bool | None = None
    neutralize: bool | None = None
    require_neutral: bool | None = None
    max_heavy_atoms: int | None = Field(default=None, ge=1)
    allowed_elements: list[str] | None = None
    #: reaction atom-map numbers ([CH3:1]) are removed, so a mapped SMILES is the same molecule as the
    #: plain one; false keeps them (then the maps are part of the canonical SMILES and its key)
    strip_atom_maps: bool = True

    def resolved(self) -> dict[str, Any]:
        base = {
            "mfpcba": dict(largest_fragment=True, remove_stereo=True, neutralize=True, require_neutral=True),
            "minimal": dict(largest_fragment=False, remove_stereo=False, neutralize=False, require_neutral=False),
        }[self.preset]
        out: dict[str, Any] = dict(base)
        for k in ("largest_fragment", "remove_stereo", "neutralize", "require_neutral"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        out["max_heavy_atoms"] = self.max_heavy_atoms
        out["allowed_elements"] = sorted(self.allowed_elements) if self.allowed_elements else None
        out["strip_atom_maps"] = self.strip_atom_maps
        return out


class FeaturizerSpec(_Spec):
    """Which featuriser preset expands the stored atom/bond properties (see mfray.chem.featurizers)."""

    preset: Literal["default", "paper"] = "default"
    max_atomic_number: int | None = Field(default=None, ge=1, le=118)


class SplitSpec(_Spec):
    """How the high-fidelity molecules are split into train/valid/test, per seed.

    ``predefined``: the folds come with the data, the same for every seed (the seeds then only vary
    training): from a column of the source files (``column``; values train / valid, validate,
    validation, val / test), from one file of ids per fold (``files``, ids in ``id_column``, matched
    to the source files' id column), or, for QMugs, from the source's published ``split_index``.
    """

    kind: Literal["random", "scaffold", "predefined"] = "random"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seeds: list[int] = [0, 1, 2, 3, 4]
    fidelity: LabelName | None = None  # which fidelity's molecules are split (default: the highest)
    column: str | None = None  # predefined: the column holding each row's fold
    files: dict[Literal["train", "valid", "test"], str] | None = None  # predefined: fold -> file of ids
    id_column: str | None = None  # predefined with files: their id column (default: "id")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(f) and f > 0 for f in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"fractions (train, valid, test) must each be > 0 and sum to 1 (got {list(v)}): "
                             "training stops early on valid and is scored on test")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("seeds: give at least one seed")
        bad = [s for s in v if not 0 <= s < 2**32]
        if bad:
            raise ValueError(f"seeds: {bad[0]} is not in 0 .. 2**32 - 1")
        twice = sorted({s for s in v if v.count(s) > 1})
        if twice:
            raise ValueError(f"seeds: {twice} given more than once (each seed is one split)")
        return v

    @model_validator(mode="after")
    def _predefined(self) -> SplitSpec:
        given = [k for k in ("column", "files", "id_column") if getattr(self, k) is not None]
        if self.kind != "predefined" and given:
            raise ValueError(f"{', '.join(given)}: only for kind = \"predefined\"")
        if self.column is not None and self.files is not None:
            raise ValueError("predefined: give column or files, not both")
        if self.files is not None and sorted(self.files) != ["test", "train", "valid"]:
            raise ValueError(f"files: one file for each of train, valid, test (got {sorted(self.files)})")
        if self.id_column is not None and self.files is None:
            raise ValueError("id_column: only with files")
        return self


#: how repeated measurements of one molecule (same fidelity and target) are combined into one label.
#: ``mfpcba``: mean over rows of the same source id (PubChem CID), then the most active (max) over
#: source ids that standardise to the same structure (stereoisomers collapsed), as MF-PCBA does.
#: ``quarantine``: conflicting values send every row involved to the quarantine table.
Duplicates = Literal["mean", "median", "max", "min", "first", "mfpcba", "quarantine"]


class DatasetSpec(_Spec):
    """A dataset: its source, fidelities (lowest first), preparation and splits."""

    #: also the store's folder name: letters, digits, '_', '-', '.', not starting with '.' (no '..')
    name: str = Field(pattern=r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$", max_length=128)
    description: str = ""
    task_type: Literal["regression", "classification"] = "regression"
    fidelities: list[LabelName] = ["lf", "hf"]
    duplicates: Duplicates = "quarantine"
    #: ``structure``: molecules are identified by their standardised structure (rows of different
    #: files or ids that are the same molecule are joined); ``id``: by the files' id columns.
    molecule_key: Literal["structure", "id"] = "structure"
    source: SourceSpec
    standardize: StandardizeSpec = StandardizeSpec()
    featurizer: FeaturizerSpec = FeaturizerSpec()
    split: SplitSpec = SplitSpec()
    tags: list[str] = []
    citation: str = ""

    # where the spec was loaded from (not part of the content hash)
    spec_path: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _fid(self) -> DatasetSpec:
        if len(set(self.fidelities)) != len(self.fidelities) or not self.fidelities:
            raise ValueError(f"fidelities must be distinct and non-empty (got {self.fidelities})")
        if isinstance(self.source, LocalSource):
            for i, lab in enumerate(self.source.labels):
                if lab.fidelity not in self.fidelities:
                    raise ValueError(
                        f"source.labels[{i}].fidelity = {lab.fidelity!r} is not one of the "
                        f"fidelities {self.fidelities}"
                    )
        if self.split.fidelity is not None and self.split.fidelity not in self.fidelities:
            raise ValueError(
                f"split.fidelity = {self.split.fidelity!r} is not one of the fidelities {self.fidelities}"
            )
        if self.split.kind == "predefined":
            src = self.source
            if isinstance(src, QmugsSource):
                if src.split_index is None or self.split.column or self.split.files:
                    raise ValueError("split.kind = \"predefined\" with a QMugs source takes its folds from "
                                     "source.split_index (set it; no split.column or split.files)")
            elif isinstance(src, LocalSource):
                if self.split.column is None and self.split.files is None:
                    raise ValueError("split.kind = \"predefined\" needs split.column (each row's fold) or "
                                     "split.files (one file of ids per fold)")
                if self.split.files is not None and not any(f.id_column for f in src.files.values()):
                    raise ValueError("split.files are matched to rows by id: give the data files an id_column")
            else:
                raise ValueError(f"split.kind = \"predefined\" is not available for a {src.kind} source")
        elif isinstance(self.source, QmugsSource) and self.source.split_train is not None:
            raise ValueError("source.split_train: only with split.kind = \"predefined\"")
        return self

    @property
    def base_dir(self) -> Path:
        return Path(self.spec_path).parent if self.spec_path else Path.cwd()

    @property
    def split_fidelity(self) -> str:
        return self.split.fidelity or self.fidelities[-1]

    def resolve_path(self, raw: str) -> Path:
        """Expand ``$VARS`` and ``~``; relative paths are taken from the spec file's folder."""
        expanded = os.path.expanduser(os.path.expandvars(raw))
        if "$" in expanded:
            raise SpecError(
                f"{self.spec_path or self.name}: path {raw!r} uses an environment variable that is not set"
            )
        p = Path(expanded)
        if p.is_absolute():
            return p
        try:
            return (self.base_dir / p).resolve()
        except (RuntimeError, OSError):  # a symlink loop: left unresolved, check_exists names it
            return Path(os.path.abspath(self.base_dir / p))

    def content_hash(self) -> str:
        return hash_obj(self.model_dump(mode="json"))

    def censored_policies(self) -> dict[tuple[str, str], str]:
        """``(fidelity, target) -> policy`` of every label whose values carry a qualifier."""
        src = self.source
        if isinstance(src, LocalSource):
            return {(lab.fidelity, lab.target): lab.censored for lab in src.labels if lab.censored is not None}
        if isinstance(src, MfpcbaSource) and src.censored is not None:
            return {("hf", "DR"): src.censored}
        return {}

    def task_policy(self, targets: list[str] | None = None, fidelity: str | None = None) -> str | None:
        """The censored-label policy of a task on ``targets`` (default: every target) of ``fidelity``
        (default: the split fidelity); None when none of them carries a qualifier."""
        fid = fidelity or self.split_fidelity
        own = {t: p for (f, t), p in self.censored_policies().items() if f == fid and (not targets or t in targets)}
        if len(set(own.values())) > 1:
            raise SpecError(f"{self.spec_path or self.name}: the {fid} targets have different censored-label policies "
                            f"{own}; choose one for the task (e.g. --censored, or censored in the study)")
        return next(iter(own.values()), None)

    def source_identity(self) -> dict[str, Any]:
        """The source as it determines a store's content: the censored-label policies are left out (a
        store keeps every bound with its direction; the policy is applied when a task is loaded)."""
        src = self.source
        out = src.model_dump(mode="json")
        # fields at their defaults are left out too, so stores of specs without qualifiers keep their keys
        if isinstance(src, LocalSource):
            for lab in out["labels"]:
                lab.pop("censored")
                for k, default in (("qualifier_column", None), ("qualifier_reversed", False)):
                    if lab[k] == default:
                        lab.pop(k)
        elif isinstance(src, MfpcbaSource):
            out.pop("censored")
            for k, default in (("dr_qualifier_columns", None), ("dr_qualifier_reversed", False)):
                if out[k] == default:
                    out.pop(k)
        return out


# ---------------------------------------------------------------- loading
def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("local", "mfpcba", "qmugs") and out.endswith("source"):
            continue  # discriminated-union tag: not a key the user wrote
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(err: ValidationError, where: str) -> str:
    lines = [f"{where}: invalid dataset spec"]
    for e in err.errors():
        loc = _format_loc(tuple(e["loc"]))
        kind = e["type"]
        if kind == "extra_forbidden":
            lines.append(f"  - unknown key {loc!r}")
        elif kind == "missing":
            lines.append(f"  - missing required key {loc!r}")
        else:
            msg = e["msg"]
            if kind == "literal_error":
                expected = e.get("ctx", {}).get("expected", "")
                msg = f"got {e.get('input')!r}; allowed values: {expected}"
            elif kind == "union_tag_invalid":
                msg = f"got {e.get('ctx', {}).get('tag')!r}; allowed kinds: {e.get('ctx', {}).get('expected_tags')}"
            lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def parse_spec(data: dict[str, Any], where: str = "<spec>", spec_path: str | None = None) -> DatasetSpec:
    try:
        return DatasetSpec.model_validate({**data, "spec_path": spec_path})
    except ValidationError as err:
        raise SpecError(format_validation_error(err, where)) from None


def load_spec(path: str | os.PathLike[str]) -> DatasetSpec:
    """Load and validate a dataset spec file; every problem is a :class:`SpecError` naming the file."""
    p = Path(path)
    data = read_toml_file(p, "dataset spec")
    return parse_spec(data, where=str(p), spec_path=str(p.resolve()))
