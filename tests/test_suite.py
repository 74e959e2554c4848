"""The suite's own guarantees: no test can hang it (pytest-timeout, configured in pyproject.toml), and a test that
needs no model pays for no torch."""
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
    # In one process (addopts cleared: no xdist workers), so the run's own output shows the stack.
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
                           "-o", "addopts=", "--rootdir", str(tmp_path), str(stuck)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode != 0 and time.monotonic() - start < 60
    assert "Timeout" in done.stdout + done.stderr and "test_waits_for_ever" in done.stdout + done.stderr
    assert "threading.Event().wait()" in done.stdout + done.stderr


def test_tests_that_load_no_model_import_no_torch(tmp_path):
    """Run on their own, tests that need no model import neither torch nor transformers: conftest imports them only
    inside the fixtures that build the tiny checkpoints, and the autouse isolated_library asks for no export."""
    files = [str(ROOT / "tests" / "test_replace_scene.py")]
    code = ("import sys, pytest\n"
            f"code = pytest.main(['-q', '-p', 'no:cacheprovider', '-o', 'addopts=', *{files!r}])\n"
            "loaded = sorted(name for name in ('torch', 'transformers') if name in sys.modules)\n"
            "print('LOADED', loaded)\n"
            "sys.exit(code or bool(loaded))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert " passed" in done.stdout and "LOADED []" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
