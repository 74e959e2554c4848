"""The page's package: its views and app.py's command line work without Gradio, whose import takes seconds."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_help_a_usage_error_and_the_views_import_neither_gradio_nor_torch():
    code = ("import contextlib, io, sys\n"
            "import app\n"
            "from music_mood.web import views\n"
            "assert views.render_tracks({}).startswith('<p>No recommendations yet')\n"
            "for argv in (['--help'], ['--port', 'x']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "        with contextlib.suppress(SystemExit):\n"
            "            app.main(argv)\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] in ('gradio', 'torch')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
