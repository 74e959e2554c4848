"""README.md's promises that code can check: its pasted --help text and its Quick start commands."""
from __future__ import annotations

import importlib
import re

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("script", ["recommend.py", "music_to_vector.py", "app.py"])
def test_pasted_help_is_the_real_help(script, call_cli):
    """The README's CLI sections are pasted from --help (110 columns); a changed option must update them."""
    pasted = re.search(rf"\$ python {re.escape(script)} --help\n(.*?)```", README, re.S)
    assert pasted, f"README.md has no pasted --help for {script}"
    # In-process: argparse reads COLUMNS when it formats. A new process's --help is test_help_imports_no_torch's.
    main = importlib.import_module(script.removesuffix(".py")).main
    real = call_cli(main, "--help", env_extra={"COLUMNS": "110"})
    assert real.returncode == 0, real.stderr
    assert pasted.group(1) == real.stdout


def test_quick_start_has_exactly_the_two_commands_ci_runs():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick_start, re.S)
    assert commands == [("pip install -r requirements.txt && pip install --no-deps -r requirements-beats.txt "
                         "&& python app.py"),
                        ("apt-get update && apt-get install -y chromium strace supysonic python3-waitress "
                         "&& pip install -r requirements-test.txt && pip install --no-deps -r requirements-beats.txt "
                         "&& python -m pytest")]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
