"""DESIGN.md layers: imports point down, and only mfray.run imports ray."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_import_mfray_does_not_import_ray():
    code = ("import sys, mfray, mfray.chem.graph, mfray.data.store, mfray.data.collate, mfray.data.sources.mfpcba, "
            "mfray.data.sources.qmugs, mfray.cli.main; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_import_linter_contracts_hold(repo):
    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.exists():
        exe = shutil.which("lint-imports")
        if exe is None:
            pytest.skip("import-linter is not installed")
    out = subprocess.run([str(exe)], capture_output=True, text=True, cwd=repo)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "2 kept, 0 broken" in out.stdout
