"""The ``mfpcba`` source: PubChem PUG-REST retrieval (through a fake transport) and the SD/DR recipe.

Fixtures (tests/fixtures/pubchem, see README.txt there): recorded list-key chunks of the real AID 1431
table (240 substances in 3 chunks of 100), a made-up AID 873 primary screen in the same layout (150
substances in 2 chunks, with planted problems), a recorded SMILES-by-CID answer and a made-up
single-AID table. Nothing here reaches the network.
"""

from __future__ import annotations

import csv
import email.message
import gzip
import io
import json
import math
import re
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from mfray.data.sources import mfpcba
from mfray.data.sources.base import SOURCES, censor_column, label_column
from mfray.data.sources.mfpcba import PubchemClient, PubchemError, PubchemMfpcbaSource, resolve_cache_dir
from mfray.data.specs import DatasetSpec, parse_spec
from mfray.utils.errors import DataError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "pubchem"
SHARED = Path("/work/shared/data")
BASE = "https://pubchem.ncbi.nlm.nih.gov/rest/pug"
SD, DR = label_column("lf", "SD"), label_column("hf", "DR")
N_SD, N_DR = 150, 240


def pxc50(um: float) -> float:
    return -math.log10(um * 1e-6)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any real request is a test bug."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def http_error(url: str, code: int, fault: str = "", headers: dict[str, str] | None = None) -> urllib.error.HTTPError:
    hdrs = email.message.Message()
    for k, v in (headers or {}).items():
        hdrs[k] = v
    body = json.dumps({"Fault": {"Code": fault, "Message": f"fault {code}"}}).encode() if fault else b""
    return urllib.error.HTTPError(url, code, "error", hdrs, io.BytesIO(body))


class Clock:
    """A fake clock: ``sleep`` records and advances it; each request takes ``latency`` seconds."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


class FakePubchem:
    """Answers PUG-REST URLs from the recorded fixtures and logs every URL asked for.

    ``fail`` holds exceptions raised, in order, before any answer; ``keys`` the currently valid list
    key per AID (a request with another key gets PubChem's 400, as an expired key does).
    """

    def __init__(self, clock: Clock | None = None, latency: float = 1.0) -> None:
        self.urls: list[str] = []
        self.times: list[float] = []
        self.fail: list[BaseException] = []
        self.keys = {873: "KEY873a", 1431: "KEY1431a"}
        self.sizes = {873: N_SD, 1431: N_DR}
        self.clock = clock
        self.latency = latency

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        if self.clock is not None:
            self.times.append(self.clock.t)
            self.clock.t += self.latency
        if self.fail:
            raise self.fail.pop(0)
        path = url.removeprefix(BASE + "/")
        if m := re.fullmatch(r"assay/aid/(\d+)/sids/JSON\?list_return=listkey", path):
            aid = int(m[1])
            return json.dumps({"IdentifierList": {"ListKey": self.keys[aid], "Size": self.sizes[aid]}}).encode()
        if m := re.fullmatch(r"assay/aid/(\d+)/CSV\?sid=listkey&listkey=(\w+)&listkey_start=(\d+)&listkey_count=100", path):
            aid, key, start = int(m[1]), m[2], int(m[3])
            if key != self.keys[aid]:
                raise http_error(url, 400, "PUGREST.BadRequest")
            return (FIX / f"AID_{aid}_sids_{start}.csv").read_bytes()
        if m := re.fullmatch(r"compound/cid/([0-9,]+)/property/SMILES/CSV", path):
            asked = set(m[1].split(","))
            lines = (FIX / "compound_smiles.csv").read_text().splitlines(keepends=True)
            return (lines[0] + "".join(ln for ln in lines[1:] if ln.split(",")[0] in asked)).encode()
        raise http_error(url, 404, "PUGREST.NotFound")


def chunk_url(aid: int, key: str, start: int) -> str:
    return f"{BASE}/assay/aid/{aid}/CSV?sid=listkey&listkey={key}&listkey_start={start}&listkey_count=100"


def key_url(aid: int) -> str:
    return f"{BASE}/assay/aid/{aid}/sids/JSON?list_return=listkey"


SMILES_URL = f"{BASE}/compound/cid/912604,2212050,999999999/property/SMILES/CSV"
FULL_RUN = [
    key_url(873), chunk_url(873, "KEY873a", 0), chunk_url(873, "KEY873a", 100),
    key_url(1431), chunk_url(1431, "KEY1431a", 0), chunk_url(1431, "KEY1431a", 100), chunk_url(1431, "KEY1431a", 200),
    SMILES_URL,
]


def make_spec(tmp_path: Path, **source: Any) -> DatasetSpec:
    src: dict[str, Any] = dict(
        kind="mfpcba", sd_aid=873, dr_aid=1431, sd_columns=["Percent inhibition"], dr_columns=["IC50 #1"],
        transform_dr="pxc50", cache_dir=str(tmp_path / "cache"),
    )
    src.update(source)
    data = {"name": "mfpcba_1431-873", "fidelities": ["lf", "hf"], "duplicates": "mfpcba", "source": src}
    return parse_spec(data, spec_path=str(tmp_path / "spec.toml"))


def make_source(spec: DatasetSpec, fake: FakePubchem, clock: Clock | None = None, **client: Any) -> PubchemMfpcbaSource:
    clock = clock or fake.clock or Clock()
    fake.clock = fake.clock or clock
    return PubchemMfpcbaSource(
        spec, client=PubchemClient(fake, sleep=clock.sleep, clock=clock, **client), sids_per_request=100
    )


def read_all(src: PubchemMfpcbaSource, chunk_rows: int = 65536) -> pa.Table:
    tables = list(src.iter_tables(chunk_rows=chunk_rows))
    assert tables and all(t.schema == src.raw_schema() for t in tables)
    assert all(t.num_rows <= chunk_rows for t in tables)
    return pa.concat_tables(tables)


def rows_of(tbl: pa.Table, file: str) -> dict[int, dict[str, Any]]:
    """file_row -> record, for one AID's rows."""
    return {r["file_row"]: r for r in tbl.to_pylist() if r["file"] == file}


# ------------------------------------------------------------------------------------ retrieval
def test_registered() -> None:
    assert SOURCES.get("mfpcba") is PubchemMfpcbaSource


def test_chunked_download_requests(tmp_path: Path) -> None:
    fake = FakePubchem()
    src = make_source(make_spec(tmp_path), fake)
    tbl = read_all(src)
    assert fake.urls == FULL_RUN
    cache = tmp_path / "cache"
    assert sorted(p.name for p in (cache / "aid_1431").iterdir()) == [
        "sids.json", "sids_000000000.csv.gz", "sids_000000100.csv.gz", "sids_000000200.csv.gz"
    ]
    assert json.loads((cache / "aid_1431" / "sids.json").read_text()) == {"size": 240, "chunk": 100}
    # chunks are stored as received
    assert gzip.decompress((cache / "aid_1431" / "sids_000000100.csv.gz").read_bytes()) == (FIX / "AID_1431_sids_100.csv").read_bytes()
    assert tbl.num_rows == N_SD + N_DR


def test_resume_makes_no_requests(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    first = read_all(make_source(spec, FakePubchem()))
    fake = FakePubchem()
    second = read_all(make_source(spec, fake))
    assert fake.urls == []
    assert second.equals(first)


def test_resume_after_interruption_gets_a_new_key(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    fake = FakePubchem()
    # interrupted: the third request (873's second chunk) fails for good
    src = make_source(spec, fake, max_retries=0)
    orig = fake.__call__
    calls = {"n": 0}

    def flaky(url: str) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise http_error(url, 503, "PUGREST.ServerBusy")
        return orig(url)

    src.client.transport = flaky
    with pytest.raises(PubchemError, match="PubChem AID 873"):
        read_all(src)
    assert (tmp_path / "cache" / "aid_873" / "sids_000000000.csv.gz").exists()
    assert not (tmp_path / "cache" / "aid_873" / "sids_000000100.csv.gz").exists()

    # the old key has expired by now: a resumed run asks for a new one and fetches only what is missing
    fake2 = FakePubchem()
    fake2.keys = {873: "KEY873b", 1431: "KEY1431b"}
    tbl = read_all(make_source(spec, fake2))
    assert fake2.urls[:2] == [key_url(873), chunk_url(873, "KEY873b", 100)]
    assert chunk_url(873, "KEY873b", 0) not in fake2.urls
    assert tbl.num_rows == N_SD + N_DR


def test_changed_assay_invalidates_the_cache(tmp_path: Path) -> None:
    """Cached chunks of a deposition that has since changed size are not mixed with new ones."""
    folder = tmp_path / "cache" / "aid_873"
    folder.mkdir(parents=True)
    (folder / "sids.json").write_text(json.dumps({"size": 120, "chunk": 100}))
    (folder / "sids_000000000.csv.gz").write_bytes(gzip.compress(b"stale"))
    fake = FakePubchem()
    tbl = read_all(make_source(make_spec(tmp_path), fake))
    assert fake.urls[:3] == [key_url(873), chunk_url(873, "KEY873a", 0), chunk_url(873, "KEY873a", 100)]
    assert json.loads((folder / "sids.json").read_text()) == {"size": 150, "chunk": 100}
    assert tbl.num_rows == N_SD + N_DR


def test_expired_key_mid_download_is_renewed(tmp_path: Path) -> None:
    fake = FakePubchem()
    orig = fake.__call__

    def expire_after_first_chunk(url: str) -> bytes:
        out = orig(url)
        if "listkey_start=0" in url and "aid/1431" in url:
            fake.keys[1431] = "KEY1431renewed"  # PubChem forgets the key
        return out

    src = make_source(make_spec(tmp_path), fake)
    src.client.transport = expire_after_first_chunk
    tbl = read_all(src)
    i = fake.urls.index(chunk_url(1431, "KEY1431a", 100))  # refused with 400 ...
    assert fake.urls[i + 1 : i + 4] == [
        key_url(1431), chunk_url(1431, "KEY1431renewed", 100), chunk_url(1431, "KEY1431renewed", 200)
    ]
    assert tbl.num_rows == N_SD + N_DR


def test_retry_with_backoff_on_503_then_success(tmp_path: Path) -> None:
    clock = Clock()
    fake = FakePubchem(clock)
    fake.fail = [http_error("x", 503, "PUGREST.ServerBusy"), TimeoutError("timed out"),
                 urllib.error.URLError("connection reset")]
    tbl = read_all(make_source(make_spec(tmp_path), fake, clock))
    assert clock.sleeps == [2.0, 4.0, 8.0]  # requests take 1 s here, so no throttling sleeps
    assert fake.urls[:4] == [key_url(873)] * 4
    assert fake.urls[4:] == FULL_RUN[1:]
    assert tbl.num_rows == N_SD + N_DR


def test_retry_after_header_and_cap(tmp_path: Path) -> None:
    clock = Clock()
    fake = FakePubchem(clock)
    fake.fail = [http_error("x", 503, headers={"Retry-After": "30"}), http_error("x", 503, headers={"Retry-After": "999"})]
    read_all(make_source(make_spec(tmp_path), fake, clock, max_backoff_s=60.0))
    assert clock.sleeps == [30.0, 60.0]


def test_give_up_after_max_retries(tmp_path: Path) -> None:
    clock = Clock()
    fake = FakePubchem(clock)
    fake.fail = [http_error("x", 503, "PUGREST.ServerBusy") for _ in range(10)]
    src = make_source(make_spec(tmp_path), fake, clock, max_retries=3)
    with pytest.raises(DataError) as err:
        read_all(src)
    msg = str(err.value)
    assert "PubChem AID 873" in msg and key_url(873) in msg
    assert "after 4 attempts" in msg and "503" in msg and "PUGREST.ServerBusy" in msg
    assert "local_tables" in msg  # says what to do offline
    assert len(fake.urls) == 4
    assert clock.sleeps == [2.0, 4.0, 8.0]


def test_client_error_is_not_retried(tmp_path: Path) -> None:
    clock = Clock()
    fake = FakePubchem(clock)
    fake.fail = [http_error("x", 404, "PUGREST.NotFound")]
    with pytest.raises(PubchemError, match=r"PubChem AID 873: PubChem refused the request \(HTTP 404.*PUGREST.NotFound") as err:
        read_all(make_source(make_spec(tmp_path), fake, clock))
    assert err.value.status == 404
    assert len(fake.urls) == 1 and clock.sleeps == []


def test_not_a_table_is_an_error(tmp_path: Path) -> None:
    fake = FakePubchem()
    orig = fake.__call__
    src = make_source(make_spec(tmp_path), fake)
    src.client.transport = lambda url: b"<html>maintenance</html>" if "CSV?sid" in url else orig(url)
    with pytest.raises(PubchemError, match="PubChem AID 873: the answer is not an assay data table"):
        read_all(src)
    assert not list((tmp_path / "cache" / "aid_873").glob("*.csv.gz"))  # nothing bad is cached


def test_rate_limit(tmp_path: Path) -> None:
    clock = Clock()
    fake = FakePubchem(clock, latency=0.01)  # fast answers: the client must wait between requests
    read_all(make_source(make_spec(tmp_path), fake, clock))
    gaps = [b - a for a, b in zip(fake.times, fake.times[1:])]
    assert len(gaps) == len(FULL_RUN) - 1
    assert min(gaps) >= 0.2 - 1e-9  # <= 5 requests a second
    assert clock.sleeps and all(abs(s - 0.19) < 1e-9 for s in clock.sleeps)


def test_cache_dir_default_without_mfray_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(tmp_path, cache_dir="$MFRAY_CACHE/pubchem")
    monkeypatch.delenv("MFRAY_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir(spec, spec.source.cache_dir) == tmp_path / "home" / ".cache" / "mfray" / "pubchem"
    monkeypatch.setenv("MFRAY_CACHE", str(tmp_path / "c"))
    assert resolve_cache_dir(spec, "${MFRAY_CACHE}/pubchem") == tmp_path / "c" / "pubchem"


# ------------------------------------------------------------------------------------ recipe
def test_description_rows_skipped_and_counts(tmp_path: Path) -> None:
    tbl = read_all(make_source(make_spec(tmp_path), FakePubchem()), chunk_rows=64)
    assert tbl.column("row").to_pylist() == list(range(N_SD + N_DR))
    files = tbl.column("file").to_pylist()
    assert files == ["PubChem AID 873"] * N_SD + ["PubChem AID 1431"] * N_DR
    assert tbl.column("file_row").to_pylist() == list(range(1, N_SD + 1)) + list(range(1, N_DR + 1))
    sd_rows, dr_rows = tbl.slice(0, N_SD), tbl.slice(N_SD)
    assert sd_rows.column(DR).null_count == N_SD  # SD rows carry only the SD label
    assert dr_rows.column(SD).null_count == N_DR
    assert dr_rows.column(DR).null_count == 0
    # SD: 2 of 150 rows have no value (one empty, one non-numeric)
    assert sd_rows.column(SD).null_count == 2
    # rows in = rows out, and rejects are a subset with reasons
    rejected = [r for r in tbl.to_pylist() if r["reject"]]
    assert sorted((r["file"], r["file_row"]) for r in rejected) == [
        ("PubChem AID 873", 5), ("PubChem AID 873", 9), ("PubChem AID 873", 11)
    ]
    # the SIDs' CIDs, as text
    assert dr_rows.column("source_id").to_pylist()[:3] == ["977140", "2405928", "658532"]


def test_pxc50_values_hand_computed(tmp_path: Path) -> None:
    tbl = read_all(make_source(make_spec(tmp_path), FakePubchem()))
    dr = rows_of(tbl, "PubChem AID 1431")
    assert dr[1][DR] == pytest.approx(pxc50(0.076))  # 7.1192
    assert dr[1][DR] == pytest.approx(7.119186, abs=1e-6)
    assert dr[2][DR] == pytest.approx(pxc50(0.08444))
    assert dr[3][DR] == pytest.approx(pxc50(0.0871))
    assert dr[240][DR] == pytest.approx(pxc50(50.0))  # '>' qualifier: the value is used as given
    assert dr[240]["source_id"] == "896727"
    sd = rows_of(tbl, "PubChem AID 873")
    assert sd[1][SD] == pytest.approx(-3.09)
    assert sd[2][SD] == pytest.approx(48.01)
    assert sd[12][SD] is None and sd[12]["reject"] is None  # empty: no label, not an error


def test_rejected_rows_are_kept_with_reasons(tmp_path: Path) -> None:
    tbl = read_all(make_source(make_spec(tmp_path), FakePubchem()))
    sd = rows_of(tbl, "PubChem AID 873")
    assert sd[5]["source_id"] is None
    assert "'PUBCHEM_CID'" in sd[5]["reject"] and "empty" in sd[5]["reject"]
    assert sd[5]["smiles"] == "CC1=CC=C(C=C1)C(=O)N2C(=NC(=N2)C3=CC=CO3)SC"
    assert sd[5][SD] == pytest.approx(77.66)  # the value is kept for the quarantine table
    assert sd[11]["reject"] == "column 'Percent inhibition': non-numeric value 'inconclusive'"
    assert sd[11][SD] is None
    assert sd[9]["smiles"] is None
    assert sd[9]["reject"].startswith("no SMILES") and "999999999" in sd[9]["reject"]
    # SMILES filled from PubChem by CID
    assert sd[7]["smiles"] == "CCSC1=CC=CC=C1C(=O)N2C3=CC=CC=C3N=N2" and sd[7]["reject"] is None
    assert sd[8]["smiles"] == "CC1=CC(=CC(=C1)C(=O)N2C=NN=C2N)C" and sd[8]["reject"] is None


def test_smiles_for_many_cids_by_assay_list_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mfpcba, "CID_LIST_LIMIT", 1)
    fake = FakePubchem()
    orig = fake.__call__
    cid_key = f"{BASE}/assay/aid/873/cids/JSON?list_return=listkey"
    cid_chunk = f"{BASE}/compound/listkey/CIDKEY/property/SMILES/CSV?listkey_start=0&listkey_count=10000"

    def route(url: str) -> bytes:
        if url == cid_key:
            fake.urls.append(url)
            return json.dumps({"IdentifierList": {"ListKey": "CIDKEY", "Size": 149}}).encode()
        if url == cid_chunk:
            fake.urls.append(url)
            return (FIX / "compound_smiles.csv").read_bytes()
        return orig(url)

    src = make_source(make_spec(tmp_path), fake)
    src.client.transport = route
    tbl = read_all(src)
    assert fake.urls[-2:] == [cid_key, cid_chunk]
    sd = rows_of(tbl, "PubChem AID 873")
    assert sd[7]["smiles"] == "CCSC1=CC=CC=C1C(=O)N2C3=CC=CC=C3N=N2"
    assert (tmp_path / "cache" / "aid_873" / "cids_000000000.csv.gz").exists()
    fake2 = FakePubchem()
    read_all(make_source(make_spec(tmp_path), fake2))
    assert fake2.urls == []


def single_aid_spec(tmp_path: Path, transform: str = "pxc50") -> DatasetSpec:
    return make_spec(
        tmp_path, sd_aid=1445, dr_aid=1445, transform_dr=transform,
        sd_columns=["Primary Inhibition", "Primary Inhibition Rep 2", "Primary Inhibition Rep 3"],
        dr_columns=["IC50"], local_tables={"1445": str(FIX / "single_aid_table.csv")},
    )


def test_single_aid_medians_and_transforms(tmp_path: Path) -> None:
    fake = FakePubchem()
    tbl = read_all(make_source(single_aid_spec(tmp_path), fake))
    assert fake.urls == []  # local table, all SMILES present
    assert tbl.num_rows == 6  # one record per substance, carrying both labels
    r = rows_of(tbl, "PubChem AID 1445")
    assert r[1][SD] == 20.0 and r[2][SD] == 15.0 and r[3][SD] is None
    assert r[4][SD] == 60.0 and r[5][SD] == -5.0 and r[6][SD] == 90.0
    assert r[1][DR] is None
    assert r[2][DR] == pytest.approx(6 - math.log10(2.5))  # 5.60206
    assert r[3][DR] == pytest.approx(7.0)
    assert r[6][DR] == pytest.approx(5.0)
    assert r[4]["reject"] == "column 'Primary Inhibition Rep 2': non-numeric value 'abc'"
    assert r[5][DR] is None and "column 'IC50'" in r[5]["reject"] and "cannot be transformed" in r[5]["reject"]
    for i in (1, 2, 3, 6):
        assert r[i]["reject"] is None

    minus = rows_of(read_all(make_source(single_aid_spec(tmp_path, "minus"), FakePubchem())), "PubChem AID 1445")
    assert [minus[i][DR] for i in (2, 3, 6)] == [-2.5, -0.1, -10.0]
    assert minus[5][DR] == 0.0 and minus[5]["reject"] is None
    plain = rows_of(read_all(make_source(single_aid_spec(tmp_path, "no"), FakePubchem())), "PubChem AID 1445")
    assert [plain[i][DR] for i in (2, 3, 5, 6)] == [2.5, 0.1, 0.0, 10.0]


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path, sd_aid=1445, dr_aid=1445, sd_columns=["Primary Inhibition", "Rep 9"], dr_columns=["IC50"],
        local_tables={"1445": str(FIX / "single_aid_table.csv")},
    )
    with pytest.raises(DataError, match=r"single_aid_table.csv \(PubChem AID 1445\): missing column\(s\) \['Rep 9'\]"):
        read_all(make_source(spec, FakePubchem()))
    spec = make_spec(tmp_path, local_tables={"873": str(tmp_path / "nope.csv")})
    with pytest.raises(DataError, match="nope.csv: local data table of PubChem AID 873"):
        read_all(make_source(spec, FakePubchem()))


def test_local_table_mixed_with_download(tmp_path: Path) -> None:
    """A local SD table (gzipped, all chunks in one file) with the DR table from PubChem."""
    lines = (FIX / "AID_873_sids_0.csv").read_text() + "".join(
        (FIX / "AID_873_sids_100.csv").read_text().splitlines(keepends=True)[6:]  # skip header + 5 description lines
    )
    local = tmp_path / "AID_873.csv.gz"
    local.write_bytes(gzip.compress(lines.encode()))
    fake = FakePubchem()
    tbl = read_all(make_source(make_spec(tmp_path, local_tables={"873": str(local)}), fake))
    assert fake.urls == [key_url(1431)] + [chunk_url(1431, "KEY1431a", s) for s in (0, 100, 200)] + [SMILES_URL]
    downloaded = read_all(make_source(make_spec(tmp_path / "b"), FakePubchem()))
    assert tbl.equals(downloaded)


def test_fingerprint_and_describe(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    src = make_source(spec, FakePubchem())
    before = src.fingerprint()
    assert before["tables"] == {"873": {"pubchem": "not downloaded"}, "1431": {"pubchem": "not downloaded"}}
    assert before["sd_aid"] == 873 and before["dr_columns"] == ["IC50 #1"] and before["transform_dr"] == "pxc50"
    assert src.describe()["tables"]["1431"]["substances"] is None
    read_all(src)
    after = src.fingerprint()
    assert after["tables"]["1431"]["pubchem"]["size"] == 240 and len(after["tables"]["1431"]["pubchem"]["digest"]) == 16
    assert make_source(spec, FakePubchem()).fingerprint() == after  # stable
    d = src.describe()
    assert d["tables"]["1431"]["chunks_cached"] == "3/3" and d["tables"]["873"]["substances"] == 150
    local = make_source(single_aid_spec(tmp_path), FakePubchem()).fingerprint()
    assert local["tables"]["1445"]["local"]["name"] == "single_aid_table.csv"


# ------------------------------------------------------------------------------------ real data
@pytest.mark.skipif(not (SHARED / "pubchem_fixtures").exists(), reason="/work/shared/data is not available")
def test_real_aid_1431_full_table(tmp_path: Path) -> None:
    real = SHARED / "pubchem_fixtures" / "AID_1431_datatable_all.csv"
    spec = make_spec(tmp_path, local_tables={"1431": str(real)})
    tbl = read_all(make_source(spec, FakePubchem()))
    dr = [r for r in tbl.to_pylist() if r["file"] == "PubChem AID 1431"]
    assert len(dr) == 1260 and tbl.num_rows == N_SD + 1260
    assert all(r["reject"] is None and r["source_id"] and r["smiles"] for r in dr)
    by_row = {r["file_row"]: r for r in dr}
    assert by_row[1][DR] == pytest.approx(7.119186, abs=1e-6)  # IC50 0.076 uM
    assert by_row[2][DR] == pytest.approx(pxc50(0.08444))
    assert sum(r[DR] == pytest.approx(pxc50(50.0)) for r in dr) >= 1000  # censored at 50 uM

    # the independent DataValuationPlatform extract gives pXC50 per CID: agree where one SID per CID.
    # Its CIDs are written rounded ("8.2859e+05"), so compare only where that text names one compound.
    hf = SHARED / "mfpcba" / "serine__SD873__HF1431.csv"
    if hf.exists():
        ref_rows = [r for r in csv.DictReader(hf.open()) if r["CID"]]
        n_ref = Counter(r["CID"] for r in ref_rows)
        ref = {r["CID"]: float(r["HF_value"]) for r in ref_rows if r["HF_value"] and r["n_sid"] == "1"}
        n_ours = Counter(f"{int(r['source_id']):.4e}" for r in dr)
        ours = {f"{int(r['source_id']):.4e}": r[DR] for r in dr}
        common = [c for c in ref if n_ref[c] == 1 and n_ours[c] == 1]
        assert len(common) >= 50
        assert all(ours[c] == pytest.approx(ref[c], abs=1e-3) for c in common)


@pytest.mark.skipif(not (SHARED / "pubchem_fixtures").exists(), reason="/work/shared/data is not available")
def test_real_aid_624326_full_table(tmp_path: Path) -> None:
    real = SHARED / "pubchem_fixtures" / "AID_624326_datatable_all.csv"  # has a RESULT_DESCR row
    spec = make_spec(tmp_path, sd_aid=624326, dr_aid=624326, sd_columns=["IC50"], dr_columns=["IC50"],
                     local_tables={"624326": str(real)})
    tbl = read_all(make_source(spec, FakePubchem()), chunk_rows=500)
    assert tbl.num_rows == 1011
    assert tbl.column("reject").null_count == 1011
    sd = tbl.column(SD).to_pylist()
    dr = tbl.column(DR).to_pylist()
    assert all((a is None and b is None) or b == pytest.approx(pxc50(a)) for a, b in zip(sd, dr))


# ------------------------------------------------------------------------------------ qualifiers
CENSOR = censor_column("hf", "DR")


@pytest.mark.parametrize("qualifiers", [{"IC50 #1": "Qualifier"}, "auto"])
def test_dr_qualifiers_mark_the_bounds(tmp_path: Path, qualifiers: Any) -> None:
    """AID 1431: PubChem writes '>' and the top concentration (50 uM) for inactive compounds."""
    spec = make_spec(tmp_path, dr_qualifier_columns=qualifiers, censored="censored")
    src = make_source(spec, FakePubchem())
    assert src.qualified_labels() == [("hf", "DR")]
    dr = [r for r in read_all(src).to_pylist() if r["file"] == "PubChem AID 1431"]
    bounds = [r for r in dr if r[CENSOR] == -1]  # '>' on the IC50: pXC50 below the bound
    fitted = [r for r in dr if r[CENSOR] == 0]
    assert len(bounds) + len(fitted) == sum(r[DR] is not None for r in dr) and bounds and fitted
    assert all(r[DR] == pytest.approx(pxc50(50.0)) for r in bounds)
    assert all(r[CENSOR] is None for r in dr if r[DR] is None)
    assert all(r["reject"] is None for r in dr)
    # without qualifiers the same values come as plain measurements, with no censor column
    plain = read_all(make_source(make_spec(tmp_path / "p"), FakePubchem()))
    assert CENSOR not in plain.column_names


def test_dr_qualifier_reversed_and_replicates(tmp_path: Path) -> None:
    """Replicate DR columns: fitted values win (median); only bounds: the tightest; both ways: a reason."""
    from mfray.data.sources.mfpcba import combine_bounds

    values = np.array([[5.0, 7.0, 4.0], [4.0, 4.5, np.nan], [4.0, 6.0, np.nan], [np.nan, np.nan, np.nan]])
    censor = np.array([[0, 0, -1], [-1, -1, 0], [-1, 1, 0], [0, 0, 0]], dtype=np.int8)
    out, cens, why = combine_bounds(values, censor, "'A', 'B'")
    assert out[0] == 6.0 and cens[0] == 0  # median of the fitted 5 and 7
    assert out[1] == 4.0 and cens[1] == -1  # true < 4 and < 4.5: below 4
    assert math.isnan(out[2]) and why[2] == "columns 'A', 'B': bounds in both directions and no fitted value"
    assert math.isnan(out[3]) and why[3] is None and why[0] is None

    table = tmp_path / "t.csv"
    table.write_text("PUBCHEM_RESULT_TAG,PUBCHEM_SID,PUBCHEM_CID,PUBCHEM_EXT_DATASOURCE_SMILES,SD,AC50_Qualifier,AC50_uM,pAC50_M\n"
                     "RESULT_TYPE,,,,FLOAT,STRING,FLOAT,STRING\n"
                     "1,11,101,CCO,5,=,1,6\n2,12,102,CCN,6,>,50,4.301\n3,13,103,CCC,7,<,0.01,8\n"
                     "4,14,104,CCCC,8,ca.,2,5.7\n5,15,105,CCCCC,9,-,,\n")
    spec = make_spec(tmp_path, sd_aid=7, dr_aid=7, sd_columns=["SD"], dr_columns=["pAC50_M"], transform_dr="no",
                     local_tables={"7": str(table)}, dr_qualifier_columns="auto", dr_qualifier_reversed=True,
                     censored="drop")
    rows = {r["file_row"]: r for r in read_all(make_source(spec, FakePubchem())).to_pylist()}
    assert [rows[i][CENSOR] for i in (1, 2, 3)] == [0, -1, 1]  # '>' on the AC50 = pAC50 below 4.301
    assert rows[4]["reject"] == ("column 'AC50_Qualifier': unknown qualifier 'ca.' (expected one of '', '=', '~', "
                                 "'>', '>=', '<', '<=')")
    assert rows[5]["reject"] is None and rows[5][DR] is None  # '-' next to no value qualifies nothing


def test_named_qualifier_column_must_exist(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, dr_qualifier_columns={"IC50 #1": "IC50 Qualifier"}, censored="censored")
    with pytest.raises(DataError, match=r"PubChem AID 1431\): missing column\(s\) \['IC50 Qualifier'\]"):
        read_all(make_source(spec, FakePubchem()))


def test_qualifier_spec_errors(tmp_path: Path) -> None:
    from mfray.utils.errors import SpecError

    with pytest.raises(SpecError, match="dr_qualifier_columns is set but censored is not"):
        make_spec(tmp_path, dr_qualifier_columns="auto")
    with pytest.raises(SpecError, match=r"dr_qualifier_columns: \['IC50'\] are not DR columns \['IC50 #1'\]"):
        make_spec(tmp_path, dr_qualifier_columns={"IC50": "Qualifier"}, censored="drop")
    with pytest.raises(SpecError, match="censored = 'drop' needs dr_qualifier_columns"):
        make_spec(tmp_path, censored="drop")


def test_policy_is_not_part_of_the_source_identity(tmp_path: Path) -> None:
    """One store serves every censored-label policy; the qualifier columns and their direction do count."""
    ident = lambda **kw: make_spec(tmp_path, **kw).source_identity()  # noqa: E731
    a = ident(dr_qualifier_columns="auto", censored="censored")
    assert a == ident(dr_qualifier_columns="auto", censored="drop")
    assert a != ident(dr_qualifier_columns="auto", censored="drop", dr_qualifier_reversed=True)
    assert a != ident(dr_qualifier_columns={"IC50 #1": "Qualifier"}, censored="drop")
    new = ("censored", "dr_qualifier_columns", "dr_qualifier_reversed")  # no qualifiers: the key as before them
    assert ident() == {k: v for k, v in make_spec(tmp_path).source.model_dump(mode="json").items() if k not in new}
