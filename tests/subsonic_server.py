"""A real Subsonic server for the tests: Debian's Supysonic (apt-get install supysonic python3-waitress), started
on 127.0.0.1 with its own config, SQLite database and music folder in a temp folder, never the machine's.

Supysonic reads its config from /etc/supysonic, ~/.supysonic, ~/.config/supysonic/supysonic.conf and
./supysonic.conf, merged in that order: its commands run with HOME and the working folder in the temp folder, so
the last two are ours, and ours sets every path it uses.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import mutagen

SUPYSONIC_CLI = Path("/usr/bin/supysonic-cli")
SUPYSONIC_SERVER = Path("/usr/bin/supysonic-server")
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class ServerTrack:
    """A track put into the server's music folder, with the tags written into it."""

    path: Path
    title: str
    artist: str
    album: str
    genre: str


class Supysonic:
    """A Supysonic server in `folder`: `start()` it, `stop()` it. `user`/`password` can log in; `tracks` are in its
    library (scanned before the server starts)."""

    def __init__(self, folder: Path, user: str, password: str):
        self.folder, self.user, self.password = folder, user, password
        self.music = folder / "music"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.tracks: list[ServerTrack] = []
        self.log = folder / "server.log"

    @property
    def url(self) -> str:
        """The address the product takes: http://USER@127.0.0.1:PORT."""
        return f"http://{self.user}@127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
        env["HOME"] = str(self.folder / "home")
        return env

    def _run(self, *args: str) -> str:
        result = subprocess.run([str(SUPYSONIC_CLI), *args], cwd=self.folder, env=self._env(), capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0 or "Traceback" in result.stderr:
            raise RuntimeError(f"supysonic-cli {args[:2]} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result.stdout

    def configure(self) -> None:
        (self.folder / "home").mkdir(parents=True, exist_ok=True)
        (self.folder / "cache").mkdir(exist_ok=True)
        (self.folder / "supysonic.conf").write_text(
            "[base]\n"
            f"database_uri = sqlite:///{self.folder / 'supysonic.db'}\n"
            "follow_symlinks = no\n"
            "[webapp]\n"
            f"cache_dir = {self.folder / 'cache'}\n"
            "log_level = WARNING\n"
            "mount_webui = off\n"
            "[daemon]\n"
            f"socket = {self.folder / 'daemon.sock'}\n"
            "run_watcher = no\n", encoding="utf-8")

    def add_tracks(self, sources: list[tuple[Path, dict[str, str]]]) -> None:
        """Copy each source file into the music folder (under its album's folder) and tag the copy with `tags`
        (title, artist, album, genre): real audio with known tags."""
        for source, tags in sources:
            target = self.music / tags["album"] / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            audio = mutagen.File(target)
            for key in ("title", "artist", "album", "genre"):
                audio[key] = [tags[key]]
            audio.save()
            self.tracks.append(ServerTrack(target, tags["title"], tags["artist"], tags["album"], tags["genre"]))

    def set_up_library(self) -> None:
        """The user, the music folder and its scan (in the foreground: no daemon runs)."""
        self._run("user", "add", self.user, "--password", self.password)
        self._run("folder", "add", "music", str(self.music))
        self._run("folder", "scan", "--foreground", "music")

    def start(self) -> None:
        """Start the server (waitress) on a free port of 127.0.0.1 and wait until it answers a ping."""
        self.port = free_port()
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            [str(SUPYSONIC_SERVER), "--server", "waitress", "--host", "127.0.0.1", "--port", str(self.port),
             "--threads", "4"], cwd=self.folder, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"supysonic-server exited ({self.process.returncode}): "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/rest/ping.view", params={"f": "json"}, timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"supysonic-server did not answer within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Stop the server it started (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_supysonic(folder: Path, user: str, password: str,
                    sources: list[tuple[Path, dict[str, str]]]) -> Supysonic:
    """A running Supysonic in `folder` whose library holds `sources` (file, tags) and whose `user` logs in with
    `password`. Stop it with .stop()."""
    for tool in (SUPYSONIC_CLI, SUPYSONIC_SERVER):
        if not tool.exists():
            raise RuntimeError(f"{tool} is missing: apt-get install supysonic python3-waitress")
    server = Supysonic(folder, user, password)
    server.configure()
    server.add_tracks(sources)
    server.set_up_library()
    server.start()
    return server
