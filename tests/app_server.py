"""Serve the page for a test: in this process, started as app.py starts it (serving_app), or as `python app.py` in
a process of its own where the process is the point (running_app); and reach it as a client does."""
from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

START_TIMEOUT_S = 300


@dataclass
class RunningApp:
    url: str  # http://127.0.0.1:PORT/ with the trailing slash
    port: int
    process: subprocess.Popen
    log: Path  # the app's stdout and stderr

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(library: Path, checkpoints: dict, work: Path, *args: str, exports: Path | None = None,
                env_extra: dict | None = None, wait: bool = True):
    """`python app.py` serving `library` with the tiny checkpoints, run from `work` (not the source tree); its
    ONNX exports come from `exports` (the run's shared folder) when given. Its system temporary folder (TMPDIR,
    where it renders soundtracks) is work/tmp; `env_extra` adds to its environment. With wait=False it is yielded
    at once, before its page answers (a test of its start-up)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSIC_MOOD_", "GRADIO_"))}
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(MUSIC_MOOD_HOME=str(library), MUSIC_MOOD_CACHE=str(work / "cache"), HF_HOME=str(work / "hf-home"),
               HF_HUB_OFFLINE="1", GRADIO_TEMP_DIR=str(work / "gradio-uploads"), GRADIO_ANALYTICS_ENABLED="False",
               TMPDIR=str(work / "tmp"), **(env_extra or {}))
    if exports is not None and not (work / "cache" / "onnx").exists():
        (work / "cache").mkdir(parents=True, exist_ok=True)
        (work / "cache" / "onnx").symlink_to(exports, target_is_directory=True)
    log = work / "app.log"
    # No --precision or --backend: the app runs as a user starts it, on this machine's default backend.
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--blip-model", checkpoints["blip"],
               "--clap-model", checkpoints["clap"], *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work,
                                   start_new_session=True)
    app = RunningApp(url=f"http://127.0.0.1:{port}/", port=port, process=process, log=log)
    try:
        if wait:
            _wait_until_serving(app)
        yield app
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class ServedApp:
    """The page served in this process by serving_app; reached as a RunningApp is (url, port)."""

    url: str  # http://127.0.0.1:PORT/ with the trailing slash
    port: int
    work: Path  # its folder, as running_app's: gradio-uploads/ (GRADIO_TEMP_DIR), tmp/ (its renders), cache/
    demo: Any  # the launched gr.Blocks


@contextlib.contextmanager
def serving_app(library: Path, checkpoints: dict, work: Path, exports: Path | None = None, host: str | None = None):
    """The page served in this process on `library` with the tiny checkpoints, started by the product's own code
    as `python app.py` starts it, and closed at the end as it stops; with `host`, as `python app.py --host HOST`
    (0.0.0.0: a page reached from the network), still reached at 127.0.0.1.

    Start-up as app.main: app.py's parser with no --precision, --backend or --host (so the same ModelChoice and
    127.0.0.1), the library from MUSIC_MOOD_HOME, app.prepare_library, processed_music/ made. Then as
    music_mood.web.server.serve: its own launch() (the page built and launched with the same routes and options)
    on a free port, the models loaded (here before the test, not
    while it runs: the start-up tests test the page while they load), freeze_loaded_objects; on the way out
    demo.close() and the renders removed, as serve's clean-up does. Importing music_mood.web.server also registers
    the audio types its track route sends (.opus as audio/ogg).

    What a process of its own had, this one gets for as long as the page is served, and gives back after:
    - the environment running_app gives app.py: no MUSIC_MOOD_* or GRADIO_* of the test run, MUSIC_MOOD_HOME,
      MUSIC_MOOD_CACHE (work/cache, its onnx/ the run's `exports` when given) and GRADIO_TEMP_DIR
      (work/gradio-uploads: Gradio reads it when the page is built and launched, and again on each request, to
      refuse a file outside it). Each test's own isolated_library still points MUSIC_MOOD_CACHE and
      MUSIC_MOOD_HOME at its tmp_path while it runs; the page reads neither then (its library's paths are fixed at
      start, the models loaded);
    - the working directory: work, where app.py ran (Gradio resolves a relative path it is sent against it);
    - its renders in work/tmp, where TMPDIR put them (RenderFolders' parent; the test process's own temporary
      folder is left alone);
    - gc.freeze() undone (gc.unfreeze), so no object of a later module stays frozen.
    Its stderr is the test's (uvicorn's error log too): a test reads the one-line error log with capfd, as a
    process's log file before.
    HF_HOME is the run's (conftest), since huggingface_hub read it when first imported.
    """
    import gc

    import app as app_script
    from music_mood.cli import model_choice
    from music_mood.library import LibraryPaths
    from music_mood.live import LiveLibrary
    from music_mood.memory import freeze_loaded_objects
    from music_mood.models import BackgroundModels
    from music_mood.serve import RenderFolders
    from music_mood.web import server

    port = free_port()
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    if exports is not None and not (work / "cache" / "onnx").exists():
        (work / "cache").mkdir(parents=True, exist_ok=True)
        (work / "cache" / "onnx").symlink_to(exports, target_is_directory=True)
    with pytest.MonkeyPatch.context() as scope:
        for name in [name for name in os.environ if name.startswith(("MUSIC_MOOD_", "GRADIO_"))]:
            scope.delenv(name)
        for name, value in (("MUSIC_MOOD_HOME", library), ("MUSIC_MOOD_CACHE", work / "cache"),
                            ("GRADIO_TEMP_DIR", work / "gradio-uploads"), ("GRADIO_ANALYTICS_ENABLED", "False")):
            scope.setenv(name, str(value))
        scope.chdir(work)
        args = app_script.build_parser().parse_args(["--port", str(port), "--blip-model", checkpoints["blip"],
                                                     "--clap-model", checkpoints["clap"],
                                                     *(["--host", host] if host else [])])
        paths = LibraryPaths.at(args.library, args.vectors, args.meta)
        live, choice = LiveLibrary(paths, args.clap_model), model_choice(args)
        app_script.prepare_library(live, choice)
        paths.processed_music.mkdir(parents=True, exist_ok=True)
        models = BackgroundModels(args.blip_model, args.clap_model, choice)
        renders = RenderFolders(work / "tmp")
        demo = server.launch(live, models, renders, args.host, args.port, args.share)
        # The forged-request tests put their links in work/gradio-uploads: it must be the folder the page takes
        # uploads from, or they would test a folder the page does not look at.
        assert Path(demo.GRADIO_CACHE) == work / "gradio-uploads", demo.GRADIO_CACHE
        # uvicorn's error log (a fault outside Gradio's events, with its traceback) went to app.py's stderr; its
        # handler holds the stderr of launch() time, which is no test's: make it write to the test's.
        for handler in logging.getLogger("uvicorn").handlers:
            if isinstance(handler, logging.StreamHandler):
                scope.setattr(handler, "stream", _CurrentStderr())
        try:
            assert Path(demo.server_app.uploaded_file_dir) == work / "gradio-uploads", demo.server_app.uploaded_file_dir
            models.load()
            if models.error:
                raise RuntimeError(f"the models did not load: {models.error}")
            freeze_loaded_objects()
            yield ServedApp(url=f"http://127.0.0.1:{port}/", port=port, work=work, demo=demo)
        finally:
            demo.close(verbose=False)
            renders.close()
            gc.unfreeze()


class _CurrentStderr:
    """A stream that writes to sys.stderr as it is when written to: pytest gives each test its own (capfd)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _wait_until_serving(app: RunningApp) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            raise RuntimeError(f"app.py exited with {app.process.returncode}:\n{app.log_text()}")
        try:
            with urllib.request.urlopen(app.url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"app.py did not answer within {START_TIMEOUT_S} s:\n{app.log_text()}")


@contextlib.contextmanager
def running_copy(built_library: Path, checkpoints: dict, tmp_path_factory, exports: Path, name: str):
    """running_app on a copy of `built_library` of its own (`name` names its folders); the RunningApp also has
    .library (the copy) and .work (the folder it runs from)."""
    library = tmp_path_factory.mktemp(name) / "library"
    shutil.copytree(built_library, library)
    work = tmp_path_factory.mktemp(f"{name}-run")
    with running_app(library, checkpoints, work, exports=exports) as running:
        running.library, running.work = library, work
        yield running


def get(app: RunningApp | ServedApp, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
    """GET `path` from the running app exactly as written: no client-side normalisation of `..` or of
    percent-escapes. The body is in the response's `body`."""
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


def path_sending_client(app: RunningApp | ServedApp):
    """A gradio_client Client of `app` that sends a file's path as written instead of uploading the file.

    gradio_client uploads the local file a FileData names before each call; a client elsewhere (or any HTTP client)
    can send a path instead, naming a file on the server. This one does, to test what the server makes of it."""
    from gradio_client import Client

    client = Client(app.url, verbose=False)
    for endpoint in client.endpoints.values():
        endpoint._upload_file = lambda file, data_index: file
    return client


def file_data(path) -> dict:
    """A FileData as a client sends it."""
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def make_secret(source: Path, secret: Path) -> Path:
    """`secret`: a copy of `source` (a track, a photo) with bytes of its own at the end, so that no other file (the
    library's copy, Gradio's copy of an example photo) has its content."""
    secret.write_bytes(source.read_bytes() + b"secret " + secret.name.encode())
    return secret


def foreign_paths(secret: Path, upload_dir: Path) -> list[str]:
    """Paths of files that are no upload of the app's: `secret` (a file outside its upload folder) named directly,
    through a link made inside the upload folder, and through `..` out of it; then probes of the server's disk
    (a missing file, a file the server may read, a folder), which must all get the same answer."""
    upload_dir.mkdir(parents=True, exist_ok=True)
    link = upload_dir / f"link-{secret.name}"
    if not link.is_symlink():
        link.symlink_to(secret)
    climb = upload_dir / ".." / ".." / Path(*secret.parts[1:])
    return [str(secret), str(link), str(climb), "/nonexistent/x.png", "/etc/shadow", "/root"]


def holds_a_copy(folder: Path, secret: Path) -> list[Path]:
    """The regular files under `folder` whose bytes are `secret`'s."""
    content = secret.read_bytes()
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.read_bytes() == content]


def upload(app: RunningApp | ServedApp, path: Path) -> str:
    """Upload `path` to the app as its page does; the path the server stored it at."""
    import httpx

    with open(path, "rb") as f:
        response = httpx.post(app.url + "gradio_api/upload", files=[("files", (path.name, f))], timeout=30)
    response.raise_for_status()
    return response.json()[0]
