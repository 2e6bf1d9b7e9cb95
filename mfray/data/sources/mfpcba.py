"""MF-PCBA pairs from PubChem: PUG-REST retrieval (chunked, cached, resumable) and the SD/DR recipe.

An MF-PCBA dataset pairs a primary single-dose screen (SD, low fidelity) with a confirmatory
dose-response assay (DR, high fidelity); see METHOD.md section 8. This source

1. gets each assay's data table from PubChem PUG-REST: a list key for the assay's substances
   (``assay/aid/<AID>/sids/JSON?list_return=listkey``), then the CSV table in chunks of
   :data:`SIDS_PER_REQUEST` substances (``assay/aid/<AID>/CSV?sid=listkey&listkey=...``). Each chunk is
   written atomically to the cache (``<cache_dir>/aid_<AID>/sids_<start>.csv.gz``) and skipped on a
   re-run, so an interrupted download resumes where it stopped. Requests are throttled to PubChem's
   limit (5 a second) and retried with exponential backoff on 5xx / 'server busy' / timeouts;
   ``source.local_tables`` reads pre-downloaded tables instead (offline use);
2. turns each substance (SID) row into one raw record: SD label = median of the replicate SD columns,
   DR label = median of the DR columns after the spec's transform (``pxc50``: XC50 in uM -> -log10 M;
   ``minus``: -value; ``no``). SMILES come from ``PUBCHEM_EXT_DATASOURCE_SMILES``; rows without one
   get PubChem's SMILES for their CID (also fetched in chunks and cached).

Rows are never dropped: rows without a CID or with non-numeric values carry a ``reject`` reason.
Averaging per CID and keeping the most active stereoisomer is the ``duplicates = "mfpcba"``
policy downstream, not done here. When the SD and DR AIDs are the same assay, each substance row is
one raw record carrying both labels (the table is read once).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mfray.data.sources.base import SOURCES, Source, censor_column, label_column
from mfray.data.sources.tabular import (
    check_exists,
    iter_file_batches,
    merge_reasons,
    parse_numeric,
    parse_qualifier,
    read_header,
)
from mfray.data.specs import TRANSFORM_DIRECTION, DatasetSpec, MfpcbaSource
from mfray.utils.errors import DataError
from mfray.utils.hashing import file_fingerprint, hash_obj
from mfray.utils.io import atomic_path

log = logging.getLogger(__name__)

PUG_REST = "https://pubchem.ncbi.nlm.nih.gov/rest/pug"
#: substances per data-table request (PubChem answers 10k-row CSV chunks in seconds)
SIDS_PER_REQUEST = 10_000
#: CIDs per ``compound/cid/<list>/property/SMILES/CSV`` URL (keeps the URL under ~2 kB)
CIDS_PER_URL = 200
#: more CIDs than this without SMILES: fetch SMILES for all of the assay's CIDs by list key instead
#: (a few dozen chunked requests rather than thousands of CID-list URLs)
CID_LIST_LIMIT = 2_000

TAG = "PUBCHEM_RESULT_TAG"
CID = "PUBCHEM_CID"
SMILES = "PUBCHEM_EXT_DATASOURCE_SMILES"
SD_LABEL = ("lf", "SD")
DR_LABEL = ("hf", "DR")
#: spec transform -> :func:`mfray.data.sources.tabular.parse_numeric` transform
DR_TRANSFORMS = {"pxc50": "pxc50_from_um", "minus": "minus", "no": "none"}
#: property columns PubChem has used for SMILES (``SMILES`` since 2025, ``CanonicalSMILES`` before)
SMILES_PROPERTY_COLUMNS = ("SMILES", "CanonicalSMILES", "IsomericSMILES", "ConnectivitySMILES")

Transport = Callable[[str], bytes]
"""Fetches one URL and returns the response body; raises ``urllib.error.HTTPError`` (non-2xx) or
another ``OSError`` (timeouts, connection failures), like :func:`urllib.request.urlopen`."""


# ---------------------------------------------------------------------------------------- client
def urllib_transport(timeout: float = 60.0) -> Transport:
    """The default transport: a plain HTTPS GET with ``timeout`` seconds (default 60)."""

    def fetch(url: str) -> bytes:
        req = urllib.request.Request(url, headers={"User-Agent": "mfray (python urllib)"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()

    return fetch


class PubchemError(DataError):
    """A PubChem request failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        # 5xx includes PubChem's 503 'PUGREST.ServerBusy' and 504 timeouts; 429/408 are throttling
        return exc.code >= 500 or exc.code in (408, 429)
    return True  # timeouts, refused/reset connections, truncated responses: try again


def _explain(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        msg = f"HTTP {exc.code} {exc.reason}"
        try:  # PUG-REST faults are JSON: {"Fault": {"Code": ..., "Message": ..., "Details": [...]}}
            fault = json.loads(exc.read() or b"{}").get("Fault", {})
            parts = [fault.get("Code"), fault.get("Message"), *(fault.get("Details") or [])]
            text = "; ".join(str(p) for p in parts if p)
            if text:
                msg += f": {text}"
        except Exception:  # noqa: BLE001 - the body is a bonus; the status says enough
            pass
        return msg
    return f"{type(exc).__name__}: {exc}"


def _retry_after(exc: BaseException) -> float:
    headers = getattr(exc, "headers", None)
    try:
        return float(headers.get("Retry-After")) if headers is not None and headers.get("Retry-After") else 0.0
    except (TypeError, ValueError):
        return 0.0


class PubchemClient:
    """PUG-REST requests through a transport, throttled and retried.

    Args:
        transport: ``fetch(url) -> bytes`` (default: :func:`urllib_transport` with ``timeout``).
        base_url: PUG-REST root (default :data:`PUG_REST`).
        timeout: seconds per request for the default transport (default 60).
        max_retries: retries after the first attempt on retryable failures (default 5); then a
            :class:`PubchemError` naming the request.
        backoff_s: first retry delay; doubles on each retry (default 2 s), capped at ``max_backoff_s``
            (default 60 s). A ``Retry-After`` header asking for longer is honoured (within the cap).
        max_per_second: request starts per second (default 5, PubChem's published limit).
        sleep, clock: injectable for tests (default :func:`time.sleep`, :func:`time.monotonic`).
    """

    def __init__(
        self,
        transport: Transport | None = None,
        *,
        base_url: str = PUG_REST,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 2.0,
        max_backoff_s: float = 60.0,
        max_per_second: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport or urllib_transport(timeout)
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.min_interval = 1.0 / max_per_second if max_per_second > 0 else 0.0
        self.sleep = sleep
        self.clock = clock
        self.n_requests = 0
        self._last_start: float | None = None

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def _throttle(self) -> None:
        if self._last_start is not None:
            wait = self._last_start + self.min_interval - self.clock()
            if wait > 0:
                self.sleep(wait)
        self._last_start = self.clock()

    def get(self, path: str, what: str, *, missing_ok: bool = False) -> bytes | None:
        """GET ``base_url/path``; ``what`` (e.g. "PubChem AID 873") prefixes error messages.

        Returns ``None`` for HTTP 404 when ``missing_ok`` (e.g. CIDs PubChem no longer has).
        """
        url = self.url(path)
        attempt = 0
        while True:
            self._throttle()
            self.n_requests += 1
            try:
                return self.transport(url)
            except (OSError, http.client.HTTPException) as exc:
                status = exc.code if isinstance(exc, urllib.error.HTTPError) else None
                if status == 404 and missing_ok:
                    return None
                why = _explain(exc)  # once: it reads the error body
                if not _retryable(exc):
                    raise PubchemError(f"{what}: PubChem refused the request ({why}): {url}", status) from None
                if attempt >= self.max_retries:
                    raise PubchemError(
                        f"{what}: no answer from PubChem after {attempt + 1} attempts (last: {why}): {url}. "
                        f"Try again later (downloaded chunks are kept), or download the assay's data table "
                        f"and name it in the spec's [source.local_tables]",
                        status,
                    ) from None
                delay = min(self.max_backoff_s, max(self.backoff_s * 2**attempt, _retry_after(exc)))
                log.warning("%s: %s; retry %d/%d in %.0f s", what, why, attempt + 1, self.max_retries, delay)
                self.sleep(delay)
                attempt += 1

    def listkey(self, path: str, what: str) -> tuple[str, int]:
        """Request a list key (``...?list_return=listkey``); returns (key, number of identifiers)."""
        body = self.get(path, what)
        assert body is not None
        try:
            info = json.loads(body)["IdentifierList"]
            return str(info["ListKey"]), int(info["Size"])
        except (ValueError, KeyError, TypeError):
            raise PubchemError(
                f"{what}: unexpected answer to a list-key request ({body[:200]!r}): {self.url(path)}"
            ) from None


# ---------------------------------------------------------------------------------------- cache
def resolve_cache_dir(spec: DatasetSpec, raw: str) -> Path:
    """``raw`` (a spec path) as a folder; an unset or empty ``$MFRAY_CACHE`` means ``~/.cache/mfray``."""
    if not os.environ.get("MFRAY_CACHE"):
        default = os.path.join(os.path.expanduser("~"), ".cache", "mfray").replace("\\", "/")
        raw = re.sub(r"\$\{MFRAY_CACHE\}|\$MFRAY_CACHE(?![A-Za-z0-9_])", lambda _m: default, raw)
    return spec.resolve_path(raw)


def _write_gz_atomic(path: Path, body: bytes) -> None:
    # mtime=0: identical downloads give identical files (and fingerprints)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(body, compresslevel=6, mtime=0))


@dataclass
class _ChunkedList:
    """Chunk files of one list-key download: ``<folder>/<stem>.json`` (size, chunk) + ``<stem>_<start>.csv.gz``."""

    folder: Path
    stem: str

    @property
    def meta_path(self) -> Path:
        return self.folder / f"{self.stem}.json"

    def chunk_path(self, start: int) -> Path:
        return self.folder / f"{self.stem}_{start:09d}.csv.gz"

    def read_meta(self) -> dict[str, int] | None:
        try:
            meta = json.loads(self.meta_path.read_text())
            return {"size": int(meta["size"]), "chunk": int(meta["chunk"])}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def paths(self, meta: dict[str, int]) -> list[Path]:
        return [self.chunk_path(s) for s in range(0, meta["size"], meta["chunk"])]

    def complete(self) -> list[Path] | None:
        """The chunk files if every one is present, else ``None``."""
        meta = self.read_meta()
        if meta is None:
            return None
        paths = self.paths(meta)
        return paths if all(p.exists() for p in paths) else None


def _download_list(
    client: PubchemClient,
    target: _ChunkedList,
    key_path: str,
    chunk_path: Callable[[str, int, int], str],
    chunk: int,
    what: str,
    check: Callable[[bytes, str], None],
) -> list[Path]:
    """Download every chunk of a list-key listing that is not cached yet; returns the chunk files.

    ``key_path`` requests the list key; ``chunk_path(key, start, count)`` is one chunk's request.
    List keys expire on PubChem's side (after hours), so the key is never stored: a resumed
    download asks for a new one, and a chunk request refused with a 4xx (a stale key) gets one
    fresh key and is tried again. Chunk files are keyed by start so they stay valid across keys.
    """
    done = target.complete()
    if done is not None:
        return done

    def new_key(meta: dict[str, int] | None) -> tuple[str, dict[str, int]]:
        key, size = client.listkey(key_path, what)
        if size <= 0:
            raise PubchemError(f"{what}: PubChem lists no identifiers for {client.url(key_path)}")
        if meta is not None and meta["size"] != size:
            # the deposition changed since the cached chunks were fetched: they cannot be mixed
            log.warning("%s: PubChem now lists %d identifiers (cache has %d): downloading again", what, size, meta["size"])
            for p in target.folder.glob(f"{target.stem}_*.csv.gz"):
                p.unlink()
            meta = None
        if meta is None:
            meta = {"size": size, "chunk": chunk}
            target.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(target.meta_path) as tmp:
                tmp.write_text(json.dumps(meta) + "\n")
        return key, meta

    key, meta = new_key(target.read_meta())
    paths = target.paths(meta)
    for start, path in zip(range(0, meta["size"], meta["chunk"]), paths):
        if path.exists():
            continue
        for attempt in (0, 1):
            url_path = chunk_path(key, start, meta["chunk"])
            try:
                body = client.get(url_path, what)
                break
            except PubchemError as e:
                if attempt or e.status is None or not 400 <= e.status < 500:
                    raise
                log.warning("%s: list key refused (%s); requesting a new one", what, e)
                key, new_meta = new_key(meta)
                if new_meta != meta:
                    raise PubchemError(
                        f"{what}: the assay changed on PubChem during the download; run again to fetch it afresh"
                    ) from None
        assert body is not None
        check(body, client.url(url_path))
        _write_gz_atomic(path, body)
        log.info("%s: chunk %d-%d of %d cached", what, start + 1, min(start + meta["chunk"], meta["size"]), meta["size"])
    return paths


def _first_line(body: bytes) -> str:
    return body[:65536].split(b"\n", 1)[0].decode("utf-8", "replace").lstrip("\ufeff")


def fetch_assay_table(client: PubchemClient, aid: int, cache_root: Path, chunk: int = SIDS_PER_REQUEST) -> list[Path]:
    """Download (or find cached) AID ``aid``'s data table as chunk files; returns them in order.

    ``chunk`` (default :data:`SIDS_PER_REQUEST`) only applies to a fresh download: a resumed one
    keeps the chunking it started with.
    """
    what = f"PubChem AID {aid}"

    def check(body: bytes, url: str) -> None:
        if TAG not in _first_line(body):
            raise PubchemError(f"{what}: the answer is not an assay data table (starts {body[:200]!r}): {url}")

    return _download_list(
        client,
        _ChunkedList(cache_root / f"aid_{aid}", "sids"),
        f"assay/aid/{aid}/sids/JSON?list_return=listkey",
        lambda key, start, n: f"assay/aid/{aid}/CSV?sid=listkey&listkey={key}&listkey_start={start}&listkey_count={n}",
        chunk,
        what,
        check,
    )


def _parse_smiles_csv(body: bytes, where: str) -> dict[int, str]:
    """``CID,SMILES`` property CSV -> {cid: smiles} (rows without a SMILES are left out)."""
    if not body.strip():
        return {}
    try:
        tbl = pacsv.read_csv(
            pa.py_buffer(body),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True, column_types={"CID": pa.string()}),
        )
    except pa.ArrowInvalid as e:
        raise DataError(f"{where}: not a PubChem property CSV ({e})") from None
    col = next((c for c in SMILES_PROPERTY_COLUMNS if c in tbl.column_names), None)
    if "CID" not in tbl.column_names or col is None:
        raise DataError(f"{where}: expected columns CID and SMILES, got {tbl.column_names}")
    out: dict[int, str] = {}
    for cid, smi in zip(tbl.column("CID").to_pylist(), pc.cast(tbl.column(col), pa.string()).to_pylist()):
        if cid and smi and cid.strip().isdigit():
            out.setdefault(int(cid.strip()), smi.strip())
    return out


def fetch_smiles(client: PubchemClient, cids: Iterable[int], cache_root: Path, aid: int) -> dict[int, str]:
    """PubChem's SMILES for ``cids`` (compounds of AID ``aid``), cached; CIDs PubChem lacks are absent.

    Up to :data:`CID_LIST_LIMIT` CIDs are asked for by CID list (:data:`CIDS_PER_URL` per request,
    cached under ``cid_smiles/`` by a digest of the list); more are fetched for the whole assay by
    list key (``aid_<AID>/cids_<start>.csv.gz``), which takes far fewer requests.
    """
    wanted = sorted(set(cids))
    if not wanted:
        return {}
    what = f"PubChem AID {aid} (SMILES by CID)"
    found: dict[int, str] = {}
    if len(wanted) <= CID_LIST_LIMIT:
        for i in range(0, len(wanted), CIDS_PER_URL):
            group = ",".join(str(c) for c in wanted[i : i + CIDS_PER_URL])
            path = cache_root / "cid_smiles" / f"{hashlib.blake2b(group.encode(), digest_size=10).hexdigest()}.csv.gz"
            if not path.exists():
                body = client.get(f"compound/cid/{group}/property/SMILES/CSV", what, missing_ok=True)
                _parse_smiles_csv(body or b"", what)  # check before caching
                _write_gz_atomic(path, body or b"")
            found.update(_parse_smiles_csv(gzip.decompress(path.read_bytes()), str(path)))
    else:

        def check(body: bytes, url: str) -> None:
            _parse_smiles_csv(body, f"{what}: {url}")

        paths = _download_list(
            client,
            _ChunkedList(cache_root / f"aid_{aid}", "cids"),
            f"assay/aid/{aid}/cids/JSON?list_return=listkey",
            lambda key, start, n: f"compound/listkey/{key}/property/SMILES/CSV?listkey_start={start}&listkey_count={n}",
            SIDS_PER_REQUEST,
            what,
            check,
        )
        keep = set(wanted)
        for path in paths:
            found.update({c: s for c, s in _parse_smiles_csv(gzip.decompress(path.read_bytes()), str(path)).items() if c in keep})
    return {c: found[c] for c in wanted if c in found}


# ---------------------------------------------------------------------------------------- recipe
@dataclass
class _Table:
    aid: int
    paths: list[Path]  # cached chunks in order, or one local file
    origin: str  # where it came from, for messages


def _strip(name: str) -> str:
    return name.lstrip("\ufeff").strip()


def _header_map(path: Path) -> dict[str, str]:
    """Stripped column name -> the name as written (PubChem headers may carry stray spaces)."""
    return {_strip(h): h for h in read_header(path, "csv", None, "utf-8")}


def _data_rows(batch: pa.Table) -> pa.Table:
    """Only substance rows: description rows (RESULT_TYPE, RESULT_UNIT, ...) have a non-integer tag."""
    tag = pc.utf8_trim_whitespace(batch.column(TAG).combine_chunks())
    return batch.filter(pc.fill_null(pc.match_substring_regex(tag, r"^[0-9]+$"), False))


def _parse_cids(arr: pa.Array) -> tuple[pa.Array, list[str | None]]:
    """CID text -> normalised CID strings (null where missing or invalid) and per-row reasons."""
    txt = pc.utf8_trim_whitespace(arr)
    ok = pc.fill_null(pc.match_substring_regex(txt, r"^[0-9]{1,18}(\.0*)?$"), False)
    digits = pc.replace_substring_regex(pc.if_else(ok, txt, pa.scalar(None, pa.string())), r"\.0*$", "")
    cids = pc.cast(pc.cast(digits, pa.int64()), pa.string())  # int round trip drops leading zeros
    reasons: list[str | None] = [None] * len(arr)
    values = txt.to_pylist()
    for i in np.flatnonzero(~ok.to_numpy(zero_copy_only=False)):
        s = values[i]
        reasons[i] = (
            f"column {CID!r}: empty (the substance has no PubChem compound)"
            if s is None or s == ""
            else f"column {CID!r}: not a compound id {s[:40]!r}"
        )
    return cids, reasons


def _median_label(
    batch: pa.Table, columns: list[str], transform: str, qualifiers: dict[str, str] | None = None,
    direction: int = 1,
) -> tuple[pa.Array, list[list[str | None]], pa.Array | None]:
    """Median over ``columns`` (each parsed and transformed; missing values skipped) per row.

    With ``qualifiers`` (value column -> its qualifier column) also the censoring direction of the
    result (see :func:`combine_bounds`); columns without a qualifier hold fitted values. ``direction``:
    -1 when '>' on a qualifier means "below" for the transformed value (see ``LabelSpec.direction``).
    """
    vals, cens = [], []
    reasons = []
    for c in columns:
        v, why = parse_numeric(batch.column(c), c, transform)
        vals.append(v.to_numpy(zero_copy_only=False).astype(np.float64))
        reasons.append(why)
        d = np.zeros(batch.num_rows, dtype=np.int8)
        if qualifiers and c in qualifiers:
            d, qwhy = parse_qualifier(batch.column(qualifiers[c]), qualifiers[c], direction, present=np.isfinite(vals[-1]))
            reasons.append(qwhy)
        cens.append(d)
    stack = np.column_stack(vals) if vals else np.full((batch.num_rows, 1), np.nan)
    if qualifiers is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no label, not an error
            med = np.nanmedian(stack, axis=1) if batch.num_rows else np.zeros(0)
        return pa.array(med, pa.float64(), mask=np.isnan(med)), reasons, None
    value, censor, why = combine_bounds(stack, np.column_stack(cens) if cens else np.zeros_like(stack, np.int8),
                                        ", ".join(repr(c) for c in columns))
    reasons.append(why)
    missing = np.isnan(value)
    return pa.array(value, pa.float64(), mask=missing), reasons, pa.array(censor, pa.int8(), mask=missing)


def combine_bounds(values: np.ndarray, censor: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """One value per row from several replicate columns that may hold bounds.

    Fitted values win: their median, censor 0. A row of bounds only gives the tightest bound (the
    smallest upper bound, the largest lower bound). Bounds in both directions and no fitted value
    cannot be one label: the row gets a reason. Returns values (NaN = none), censor, reasons.
    """
    n = len(values)
    out = np.full(n, np.nan)
    cens = np.zeros(n, dtype=np.int8)
    reasons: list[str | None] = [None] * n
    present = np.isfinite(values)
    fitted = present & (censor == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fit_med = np.nanmedian(np.where(fitted, values, np.nan), axis=1) if n else np.zeros(0)
        upper = np.nanmin(np.where(present & (censor < 0), values, np.nan), axis=1) if n else np.zeros(0)
        lower = np.nanmax(np.where(present & (censor > 0), values, np.nan), axis=1) if n else np.zeros(0)
    has_fit = fitted.any(axis=1)
    has_up = (present & (censor < 0)).any(axis=1)
    has_low = (present & (censor > 0)).any(axis=1)
    out[has_fit] = fit_med[has_fit]
    only_up = ~has_fit & has_up & ~has_low
    only_low = ~has_fit & has_low & ~has_up
    out[only_up], cens[only_up] = upper[only_up], -1
    out[only_low], cens[only_low] = lower[only_low], 1
    for i in np.flatnonzero(~has_fit & has_up & has_low):
        reasons[i] = f"columns {what}: bounds in both directions and no fitted value"
    return out, cens, reasons


@SOURCES.register("mfpcba")
class PubchemMfpcbaSource(Source):
    """Reads a ``kind = "mfpcba"`` source: an SD/DR pair of PubChem assays (see the module docstring).

    Args:
        spec: the dataset spec.
        client: the PubChem client (default: a :class:`PubchemClient` over ``transport``).
        transport: ``fetch(url) -> bytes`` for the default client (default: urllib, 60 s timeout).
        sids_per_request: substances per data-table chunk of a fresh download (default
            :data:`SIDS_PER_REQUEST`).
    """

    def __init__(
        self,
        spec: DatasetSpec,
        *,
        client: PubchemClient | None = None,
        transport: Transport | None = None,
        sids_per_request: int = SIDS_PER_REQUEST,
    ) -> None:
        super().__init__(spec)
        assert isinstance(spec.source, MfpcbaSource)
        self.src: MfpcbaSource = spec.source
        self._client = client
        self._transport = transport
        self.sids_per_request = sids_per_request

    # ------------------------------------------------------------------ facts
    @property
    def client(self) -> PubchemClient:
        if self._client is None:
            self._client = PubchemClient(self._transport)
        return self._client

    @property
    def cache_dir(self) -> Path:
        return resolve_cache_dir(self.spec, self.src.cache_dir)

    @property
    def aids(self) -> list[int]:
        return list(dict.fromkeys([self.src.sd_aid, self.src.dr_aid]))

    def labels(self) -> list[tuple[str, str]]:
        return [SD_LABEL, DR_LABEL]

    def qualified_labels(self) -> list[tuple[str, str]]:
        return [DR_LABEL] if self.src.dr_qualifier_columns is not None else []

    def qualifier_columns(self, header: list[str]) -> dict[str, str] | None:
        """DR column -> its qualifier column in a table with ``header`` (stripped names); None: the spec
        names no qualifiers. ``"auto"`` takes the column right before each DR column when its name
        holds "qualifier" (how PubChem lays out its tables)."""
        spec = self.src.dr_qualifier_columns
        if spec is None:
            return None
        if isinstance(spec, dict):
            return dict(spec)
        found = {}
        for c in self.src.dr_columns:
            i = header.index(c) if c in header else -1
            for j in range(i - 1, max(i - 3, -1), -1):
                if j >= 0 and "qualifier" in header[j].lower():
                    found[c] = header[j]
                    break
        return found

    def local_path(self, aid: int) -> Path | None:
        raw = self.src.local_tables.get(aid)
        return None if raw is None else self.spec.resolve_path(raw)

    def _cached(self, aid: int) -> _ChunkedList:
        return _ChunkedList(self.cache_dir / f"aid_{aid}", "sids")

    def missing(self) -> str | None:
        absent = []
        for aid in self.aids:
            local = self.local_path(aid)
            if local is not None:
                if not local.exists():
                    return f"local table of PubChem AID {aid} not found: {local}"
            elif self._cached(aid).complete() is None:
                absent.append(str(aid))
        if not absent:
            return None
        return (f"PubChem AID(s) {', '.join(absent)} not downloaded (`mfray featurize {self.spec.name}` with "
                f"network access fetches them into {self.cache_dir})")

    def fingerprint(self) -> dict[str, Any]:
        """AIDs, columns and transform, plus digests of local tables and of complete cached downloads.

        An assay not downloaded yet is marked so: its fingerprint changes once it is.
        """
        tables: dict[str, Any] = {}
        for aid in self.aids:
            local = self.local_path(aid)
            if local is not None:
                check_exists(local, f"local data table of PubChem AID {aid} (dataset {self.spec.name!r})")
                tables[str(aid)] = {"local": file_fingerprint(local)}
                continue
            cache = self._cached(aid)
            paths = cache.complete()
            meta = cache.read_meta()
            tables[str(aid)] = (
                {"pubchem": {**(meta or {}), "digest": hash_obj([file_fingerprint(p) for p in paths])}}
                if paths is not None
                else {"pubchem": "not downloaded"}
            )
        return {**self._assay_facts(), "tables": tables}

    def _assay_facts(self) -> dict[str, Any]:
        return {
            "kind": "mfpcba",
            "sd_aid": self.src.sd_aid,
            "dr_aid": self.src.dr_aid,
            "sd_columns": list(self.src.sd_columns),
            "dr_columns": list(self.src.dr_columns),
            "transform_dr": self.src.transform_dr,
        }

    def describe(self) -> dict[str, Any]:
        tables: dict[str, Any] = {}
        for aid in self.aids:
            local = self.local_path(aid)
            if local is not None:
                tables[str(aid)] = {"from": "local file", "path": str(local), "exists": local.exists()}
                continue
            cache = self._cached(aid)
            meta = cache.read_meta()
            n_chunks = sum(p.exists() for p in cache.paths(meta)) if meta else 0
            tables[str(aid)] = {
                "from": "PubChem PUG-REST",
                "url": f"https://pubchem.ncbi.nlm.nih.gov/bioassay/{aid}",
                "cache": str(cache.folder),
                "substances": meta["size"] if meta else None,
                "chunks_cached": f"{n_chunks}/{len(cache.paths(meta))}" if meta else "0",
            }
        return {**self._assay_facts(), "tables": tables}

    # ------------------------------------------------------------------ retrieval
    def download(self) -> list[_Table]:
        """Make every table available (local file, cache, or PubChem); returns them SD first."""
        out = []
        for aid in self.aids:
            local = self.local_path(aid)
            if local is not None:
                check_exists(local, f"local data table of PubChem AID {aid} (dataset {self.spec.name!r})")
                out.append(_Table(aid, [local], str(local)))
            else:
                paths = fetch_assay_table(self.client, aid, self.cache_dir, self.sids_per_request)
                out.append(_Table(aid, paths, f"PubChem AID {aid} (cached in {paths[0].parent})"))
        return out

    def _columns(self, table: _Table, path: Path, label_cols: list[str]) -> tuple[dict[str, str], bool]:
        """Check ``path`` has what the spec names; returns the header map and whether it has SMILES."""
        hmap = _header_map(path)
        missing = [c for c in [TAG, CID, *label_cols] if c not in hmap]
        if missing:
            raise DataError(
                f"{path} (PubChem AID {table.aid}): missing column(s) {missing} named in the spec "
                f"{self.spec.spec_path or self.spec.name}; the table has columns {list(hmap)}"
            )
        return hmap, SMILES in hmap

    def _smiles_for(self, table: _Table) -> dict[int, str]:
        """PubChem SMILES for the table's rows that have a CID but no depositor SMILES."""
        need: set[int] = set()
        for path in table.paths:
            hmap, has_smiles = self._columns(table, path, [])
            cols = [hmap[TAG], hmap[CID]] + ([hmap[SMILES]] if has_smiles else [])
            for batch in iter_file_batches(path, "csv", None, "utf-8", cols, 1 << 16):
                batch = _data_rows(batch.rename_columns([_strip(c) for c in batch.column_names]))
                cids, _ = _parse_cids(batch.column(CID).combine_chunks())
                if has_smiles:
                    smi = pc.utf8_trim_whitespace(batch.column(SMILES).combine_chunks())
                    lacking = pc.fill_null(pc.equal(smi, ""), True)
                    cids = cids.filter(lacking)
                need.update(int(c) for c in cids.to_pylist() if c is not None)
        if not need:
            return {}
        log.info("PubChem AID %d: %d compounds without SMILES in the table; asking PubChem", table.aid, len(need))
        return fetch_smiles(self.client, need, self.cache_dir, table.aid)

    # ------------------------------------------------------------------ records
    def _records(
        self, table: _Table, parts: list[tuple[tuple[str, str], list[str], str]], smiles_map: dict[int, str],
        chunk_rows: int,
    ) -> Iterator[dict[str, Any]]:
        """Raw-record columns (without ``row``) for every substance row of ``table``."""
        label_cols = list(dict.fromkeys(c for _, cols, _ in parts for c in cols))
        file_label = f"PubChem AID {table.aid}"
        file_row = 0
        qualifier_maps: dict[str, dict[str, str]] = {}
        for path in table.paths:
            hmap, has_smiles = self._columns(table, path, label_cols)
            quals: dict[str, str] = {}
            if any(p[0] == DR_LABEL for p in parts):
                quals = self.qualifier_columns(list(hmap)) or {}
                absent = [q for q in quals.values() if q not in hmap]
                if absent:
                    raise DataError(
                        f"{path} (PubChem AID {table.aid}): missing qualifier column(s) {absent} named in "
                        f"dr_qualifier_columns of {self.spec.spec_path or self.spec.name}; the table has columns {list(hmap)}")
                qualifier_maps[str(path)] = quals
            wanted = list(dict.fromkeys([TAG, CID] + ([SMILES] if has_smiles else []) + label_cols + list(quals.values())))
            for batch in iter_file_batches(path, "csv", None, "utf-8", [hmap[c] for c in wanted], chunk_rows):
                batch = _data_rows(batch.rename_columns([_strip(c) for c in batch.column_names]))
                n = batch.num_rows
                if n == 0:
                    continue
                cids, cid_why = _parse_cids(batch.column(CID).combine_chunks())
                smiles, smiles_why = self._smiles(batch, cids, has_smiles, smiles_map)
                cols: dict[str, Any] = {
                    "file": pa.array([file_label] * n, pa.string()),
                    "file_row": pa.array(range(file_row + 1, file_row + n + 1), pa.int64()),
                    "source_id": cids,
                    "smiles": smiles,
                }
                reasons = [cid_why, smiles_why]
                for fid_target in self.labels():
                    part = next((p for p in parts if p[0] == fid_target), None)
                    qualified = fid_target in self.qualified_labels()
                    if part is None:
                        cols[label_column(*fid_target)] = pa.nulls(n, pa.float64())
                        if qualified:
                            cols[censor_column(*fid_target)] = pa.nulls(n, pa.int8())
                        continue
                    quals = qualifier_maps.get(str(path)) if qualified else None
                    direction = TRANSFORM_DIRECTION[part[2]] * (-1 if self.src.dr_qualifier_reversed else 1)
                    vals, why, cens = _median_label(batch, part[1], part[2], quals, direction)
                    cols[label_column(*fid_target)] = vals
                    if qualified:
                        cols[censor_column(*fid_target)] = cens
                    reasons += why
                cols["reject"] = pa.array(merge_reasons(*reasons), pa.string())
                cols["_n"] = n
                yield cols
                file_row += n

    @staticmethod
    def _smiles(
        batch: pa.Table, cids: pa.Array, has_smiles: bool, smiles_map: dict[int, str]
    ) -> tuple[pa.Array, list[str | None]]:
        n = batch.num_rows
        given: list[str | None] = [None] * n
        if has_smiles:
            given = [s or None for s in pc.utf8_trim_whitespace(batch.column(SMILES).combine_chunks()).to_pylist()]
        reasons: list[str | None] = [None] * n
        cid_list = cids.to_pylist()
        out: list[str | None] = []
        for i, (s, c) in enumerate(zip(given, cid_list)):
            if s is None and c is not None:
                s = smiles_map.get(int(c))
                if s is None:
                    where = f"column {SMILES!r} is empty" if has_smiles else f"the table has no {SMILES!r} column"
                    reasons[i] = f"no SMILES: {where} and PubChem gave none for CID {c}"
            out.append(s)
        return pa.array(out, pa.string()), reasons

    def iter_tables(self, chunk_rows: int = 65536) -> Iterator[pa.Table]:
        """Raw records: the SD table's substance rows, then the DR table's (one pass if the same AID).

        Everything is downloaded (or found in the cache) before the first table is yielded.
        """
        tables = self.download()
        dr_transform = DR_TRANSFORMS[self.src.transform_dr]
        sd_part = (SD_LABEL, list(self.src.sd_columns), "none")
        dr_part = (DR_LABEL, list(self.src.dr_columns), dr_transform)
        if len(tables) == 1:  # one assay has both the single-dose and the dose-response columns
            plan = [(tables[0], [sd_part, dr_part])]
        else:
            plan = [(tables[0], [sd_part]), (tables[1], [dr_part])]
        # every file's columns are checked before any (slow) SMILES look-up
        explicit = self.src.dr_qualifier_columns if isinstance(self.src.dr_qualifier_columns, dict) else {}
        for table, parts in plan:
            quals = list(explicit.values()) if any(p[0] == DR_LABEL for p in parts) else []
            for path in table.paths:
                self._columns(table, path, [c for _, cols, _ in parts for c in cols] + quals)
        smiles_maps = [self._smiles_for(table) for table, _ in plan]

        schema = self.raw_schema()
        row0 = 0
        buf: list[pa.Table] = []
        n_buf = 0

        i_row = schema.get_field_index("row")

        def emit(tbl: pa.Table) -> pa.Table:
            # row numbers are given at the end so that they run on across tables and re-chunking
            nonlocal row0
            n = tbl.num_rows
            tbl = tbl.set_column(i_row, schema.field("row"), pa.array(range(row0, row0 + n), pa.int64()))
            row0 += n
            return tbl

        for (table, parts), smap in zip(plan, smiles_maps):
            for cols in self._records(table, parts, smap, chunk_rows):
                n = cols.pop("_n")
                cols["row"] = pa.array(np.zeros(n, dtype=np.int64))
                buf.append(pa.table({k: cols[k] for k in schema.names}, schema=schema))
                n_buf += n
                while n_buf >= chunk_rows:
                    whole = pa.concat_tables(buf).combine_chunks()
                    yield emit(whole.slice(0, chunk_rows))
                    rest = whole.slice(chunk_rows)
                    buf, n_buf = [rest], rest.num_rows
        if n_buf:
            yield emit(pa.concat_tables(buf).combine_chunks())
