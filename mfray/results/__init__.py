"""Results layer: the central results store (Parquet, one part per run) and reports (Polars, SciPy).

``from mfray.results import ResultsStore, RunRecord`` is all a study runner needs; reports live in
:mod:`mfray.results.report` (imported on use: it pulls in SciPy, and matplotlib for figures).
No torch, no ray: this layer reads and writes tables only.
"""

from mfray.results.record import BASE_SCHEMA, ResultsError, RunRecord, Versions, flatten_params, make_run_key
from mfray.results.store import ResultsStore

__all__ = ["BASE_SCHEMA", "ResultsError", "ResultsStore", "RunRecord", "Versions", "flatten_params", "make_run_key"]
