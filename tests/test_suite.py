"""The suite's own guarantees: no test can hang it (pytest-timeout, configured in pyproject.toml)."""
from __future__ import annotations

import subprocess
import sys
import time

from tests.conftest import ROOT


def test_every_test_has_a_time_limit(pytestconfig):
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert 0 < float(pytestconfig.getini("timeout")) <= 1800
    assert pytestconfig.getini("timeout_method") == "thread"


def test_a_test_that_hangs_fails_with_the_stack_of_where_it_stuck(tmp_path):
    """A test stuck waiting ends the run at its limit, with the place it waited in, instead of hanging."""
    stuck = tmp_path / "test_stuck.py"
    stuck.write_text("import pytest, threading\n\n"
                     "@pytest.mark.timeout(3)\n"
                     "def test_waits_for_ever():\n"
                     "    threading.Event().wait()\n")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
                           "--rootdir", str(tmp_path), str(stuck)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode != 0 and time.monotonic() - start < 60
    assert "Timeout" in done.stdout + done.stderr and "test_waits_for_ever" in done.stdout + done.stderr
    assert "threading.Event().wait()" in done.stdout + done.stderr
