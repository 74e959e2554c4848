"""Shared fixtures: tiny real-architecture checkpoints, real photos, real music, and an isolated library."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

from music_mood.beats import ONSET_TRACKER, TRACKER_ENV
from music_mood.engines import ModelChoice

# huggingface_hub reads these once, when it is first imported (through transformers, by the first test that needs a
# model): set them before, so models loaded in the test process never look at the hub or the user's cache (each
# test also gets its own).
# The --real-models tier is the exception: it loads the released checkpoints from the user's cache. pytest-xdist's
# workers are started without the command line's options, so the run's choice reaches them through the environment.
REAL_MODELS_ENV = "MUSIC_MOOD_TESTS_REAL_MODELS"
if "--real-models" in sys.argv:
    os.environ[REAL_MODELS_ENV] = "1"
if os.environ.get(REAL_MODELS_ENV) != "1":
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="music-mood-tests-hf-")
# Our own cache too, for whatever a session fixture writes before a test's isolated_library points it elsewhere.
os.environ["MUSIC_MOOD_CACHE"] = tempfile.mkdtemp(prefix="music-mood-tests-cache-")

ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--real-models", action="store_true",
                     help="also run the tests that load the released BLIP and CLAP checkpoints (needs them cached)")


def pytest_configure(config):
    config.addinivalue_line("markers", "real_models: loads the released checkpoints; run with --real-models")


# The modules whose tests wait longest (for a cluster's deadlines, killed builders, app servers, a browser) run
# first: pytest-xdist hands each of its two workers a whole module at a time (pyproject.toml: --dist loadfile) in
# collection order, so the long ones start at once and the short ones fill in around them, and both workers end
# about together. The rest keep their order.
SLOWEST_MODULES = ("test_ray_build.py", "test_app.py", "test_crash.py", "test_app_slideshow.py", "test_browser.py",
                   "test_soundtrack.py", "test_browser_slideshow.py", "test_database.py")


def _module_rank(item) -> int:
    name = item.path.name
    return SLOWEST_MODULES.index(name) if name in SLOWEST_MODULES else len(SLOWEST_MODULES)


def pytest_collection_modifyitems(config, items):
    """The slowest modules first (SLOWEST_MODULES). Real-checkpoint tests are deselected, not skipped, unless asked
    for: CI treats any skip as a failure."""
    items.sort(key=_module_rank)  # stable: each module's tests in their own order
    if config.getoption("--real-models"):
        return
    deselected = [item for item in items if "real_models" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if "real_models" not in item.keywords]


@pytest.fixture(scope="session")
def exports_folder(tmp_path_factory) -> Path:
    """Where the run's ONNX exports are kept: every test's cache links to it; shared_exports fills it, and only
    for the tests that ask for the checkpoints, so a test that loads no model imports no torch and waits for no
    export."""
    return tmp_path_factory.mktemp("onnx-exports")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Tiny BLIP and CLAP checkpoints (real classes, random weights, real processors), saved to disk, not exported
    yet: use `checkpoints`. model_factory (torch, transformers) is imported here, by the first test that needs it."""
    from tests.model_factory import build_blip_checkpoint, build_clap_checkpoint

    folder = tmp_path_factory.mktemp("checkpoints")
    return {"blip": str(build_blip_checkpoint(folder / "blip")), "clap": str(build_clap_checkpoint(folder / "clap"))}


@pytest.fixture(scope="session")
def shared_exports(tmp_path_factory, exports_folder, tiny_checkpoints) -> Path:
    """The run's ONNX exports of the tiny checkpoints, made once, before the first test that uses the checkpoints:
    an app a test starts finds them (a first start exports, which imports torch), and the crash tests count the
    builder's writes to the library, not a one-time export's."""
    from music_mood import models

    cache = tmp_path_factory.mktemp("export-cache")
    (cache / "onnx").symlink_to(exports_folder, target_is_directory=True)
    with pytest.MonkeyPatch.context() as scope:
        scope.setenv("MUSIC_MOOD_CACHE", str(cache))
        for load, kind in ((models.load_blip, "blip"), (models.load_clap_text, "clap"),
                           (models.load_clap_audio, "clap")):
            load(tiny_checkpoints[kind])  # the default backend: ONNX Runtime on most CPUs
    return exports_folder


@pytest.fixture(autouse=True)
def isolated_library(tmp_path, monkeypatch, exports_folder):
    """Every test gets its own library folder, Hugging Face cache and our cache; nothing touches the user's.

    Our cache's onnx/ is a link to the run's shared exports (a test of the export cache itself replaces it), which
    are made only when the test uses the checkpoints."""
    library = tmp_path / "library"
    library.mkdir()
    monkeypatch.setenv("MUSIC_MOOD_HOME", str(library))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MUSIC_MOOD_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "onnx").symlink_to(exports_folder, target_is_directory=True)
    for name in ("MUSIC_MOOD_BLIP_MODEL", "MUSIC_MOOD_CLAP_MODEL", "MUSIC_MOOD_PRECISION", "MUSIC_MOOD_BACKEND",
                 "MUSIC_MOOD_THREADS"):
        monkeypatch.delenv(name, raising=False)
    # Beats by the floor (librosa's onsets alone) in tests that are not about beats: BeatNet's network costs about
    # 0.1 s a track, over a hundred seconds of the suite's CPU. The tests of beats and tempo use the default,
    # the network (default_beat_tracker), as does the session's built_library (built before this runs).
    monkeypatch.setenv(TRACKER_ENV, ONSET_TRACKER)
    return library


@pytest.fixture
def default_beat_tracker(monkeypatch):
    """The product's default beat tracker (BeatNet's network), for tests of beats and tempo: a module uses it with
    `pytestmark = pytest.mark.usefixtures("default_beat_tracker")`."""
    monkeypatch.delenv(TRACKER_ENV, raising=False)


@pytest.fixture(scope="session")
def checkpoints(tiny_checkpoints, shared_exports):
    """The tiny checkpoints' folders by kind ("blip", "clap"), their ONNX exports made (shared_exports)."""
    return tiny_checkpoints


@pytest.fixture(scope="session")
def blip(checkpoints):
    from music_mood.models import load_blip

    return load_blip(checkpoints["blip"], ModelChoice("fp32"))


@pytest.fixture(scope="session")
def clap_text(checkpoints):
    from music_mood.models import load_clap_text

    return load_clap_text(checkpoints["clap"], ModelChoice("fp32"))


@pytest.fixture(scope="session")
def default_models(checkpoints):
    """(BLIP, CLAP text) at the default precision and backend, as `python app.py` runs them on this machine."""
    from music_mood.models import load_blip, load_clap_text

    return load_blip(checkpoints["blip"]), load_clap_text(checkpoints["clap"])


@pytest.fixture(scope="session")
def clap_audio(checkpoints):
    from music_mood.models import load_clap_audio

    return load_clap_audio(checkpoints["clap"], ModelChoice("fp32"))


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """Real photographs shipped with scikit-image."""
    import skimage

    data = Path(skimage.__file__).parent / "data"
    return {name: data / f"{name}" for name in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg",
                                                "motorcycle_left.png", "hubble_deep_field.jpg")}


@pytest.fixture(scope="session")
def sample_tracks() -> list[Path]:
    """The 28 real MIT-licensed tracks of immich-memories-music, sorted."""
    import immich_memories_music

    return sorted(immich_memories_music.tracks_dir().glob("*/*.opus"))


def put_in_new_music(library: Path, tracks, mood_from_folder: bool = True) -> list[Path]:
    """Copy tracks into library/new_music/<their mood folder>/, as a user would drop them."""
    copied = []
    for track in tracks:
        target = library / "new_music" / (track.parent.name if mood_from_folder else "") / track.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(track, target)
        copied.append(target)
    return copied


@pytest.fixture(scope="session")
def built_library(tmp_path_factory, clap_audio, sample_tracks):
    """A library built once from six real tracks (one or two of each mood); copy it before changing it."""
    from music_mood.build import build_library
    from music_mood.library import LibraryPaths

    library = tmp_path_factory.mktemp("built") / "library"
    put_in_new_music(library, sample_tracks[::5])
    report = build_library(clap_audio, LibraryPaths.at(library), progress=False)
    assert not report.failed and len(report.added) == len(sample_tracks[::5])
    return library


def store_as_table(library: Path, table: bool = True, change=None, sources: list[dict] | None = None) -> None:
    """Commit the library in `library` again, its records as a track table (or inline JSON with table=False), as
    a catalogue's are; `change(tracks)` may edit the records first, `sources` replace the committed sources. Through
    the product's own commit."""
    from music_mood.library import LibraryPaths, load_database, save_database
    from music_mood.storage import acquire_lock

    paths = LibraryPaths.at(library)
    lock = acquire_lock(paths.lock, timeout=5)
    try:
        db = load_database(paths)
        db.tracks, db.table = [dict(t) for t in db.tracks], table
        if change is not None:
            change(db.tracks)
        sample_rate = json.loads(paths.metadata.read_text(encoding="utf-8"))["embedding"]["sample_rate"]
        save_database(db, paths, sample_rate, sources=sources)
    finally:
        lock.release()


@pytest.fixture
def library_copy(built_library, isolated_library):
    """The built library copied into this test's own library folder."""
    shutil.rmtree(isolated_library)
    shutil.copytree(built_library, isolated_library)
    return isolated_library


def run_cli(module: str, *args, env_extra=None, cwd=None):
    """Run one of the project's scripts as a user would: a new process; returns CompletedProcess.

    For the few tests whose point is the process itself; the others use call_cli, which spares each call the
    seconds a new process spends importing torch and loading the models.
    """
    import subprocess

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / module), *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=600)


class Result(NamedTuple):
    """What a CLI run left, as subprocess.run(capture_output=True, text=True) gives it."""

    returncode: int
    stdout: str
    stderr: str


# Python's own warning filters when no -W option or PYTHONWARNINGS is given: what a user's process runs with.
PYTHON_DEFAULT_WARNING_FILTERS = [("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                                  ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                                  ("ignore", ResourceWarning, "")]


def _print_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@pytest.fixture
def call_cli(capfd, monkeypatch):
    """Run a script's main(argv) in this process as run_cli would run the script; returns a Result.

    The same argv, environment (env_extra is set for the call only), working directory and exit code: argparse's
    SystemExit (2 for usage, 0 for --help) is caught and turned into the code a process would exit with. capfd
    takes file descriptors 1 and 2, so what C libraries and child processes write there is captured too, as in a
    subprocess; warnings print to stderr under Python's default filters instead of being collected by pytest, so a
    stray warning still breaks an "exactly one line on stderr" assertion. Any other exception propagates.
    What differs from a new process: modules are imported and models loaded (lru_cache) once per session, and
    huggingface_hub read HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE when conftest first imported it, so a test of
    the hub or of what a fresh process imports still needs run_cli.
    """
    def call(main, *args, env_extra=None, cwd=None) -> Result:
        capfd.readouterr()  # what the test printed before is not this run's output
        with monkeypatch.context() as scope, warnings.catch_warnings():
            for name, value in (env_extra or {}).items():
                scope.setenv(name, value)
            scope.chdir(cwd or ROOT)
            warnings.resetwarnings()
            for action, category, module in PYTHON_DEFAULT_WARNING_FILTERS:
                warnings.filterwarnings(action, category=category, module=module, append=True)
            warnings.showwarning = _print_warning  # catch_warnings puts pytest's own recorder back afterwards
            try:
                code = main([str(arg) for arg in args])
            except SystemExit as e:
                code = e.code
        if code is not None and not isinstance(code, int):  # what `raise SystemExit(...)` does at a script's top
            print(code, file=sys.stderr)
            code = 1
        captured = capfd.readouterr()
        return Result(code or 0, captured.out, captured.err)

    return call


# The browser tests' Chromium: Debian's (apt-get install chromium), headless, without the background connections
# this machine's closed network refuses; one browser for the whole run.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 120_000  # what a browser test waits for the page at most (the first query loads the models)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def open_page(browser, url: str, tab: str | None = None):
    """A new page of `browser` on the app at `url`, loaded (its Recommend button there), on `tab` when given;
    closed at the end."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        page.goto(url)
        page.wait_for_selector("#recommend", timeout=WAIT_MS)
        if tab is not None:
            page.get_by_role("tab", name=tab).click()
        yield page
    finally:
        page.close()
