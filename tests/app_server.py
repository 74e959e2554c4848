"""Start app.py as a user would, in a process of its own, and wait until its page answers."""
from __future__ import annotations

import contextlib
import http.client
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


def get(app: RunningApp, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
    """GET `path` from the running app exactly as written: no client-side normalisation of `..` or of
    percent-escapes. The body is in the response's `body`."""
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


def path_sending_client(app: RunningApp):
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


def upload(app: RunningApp, path: Path) -> str:
    """Upload `path` to the app as its page does; the path the server stored it at."""
    import httpx

    with open(path, "rb") as f:
        response = httpx.post(app.url + "gradio_api/upload", files=[("files", (path.name, f))], timeout=30)
    response.raise_for_status()
    return response.json()[0]
