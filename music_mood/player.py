"""Playing a track from a given moment with an audio player found on this machine (recommend.py --play)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys


def player_command(path: str, start_s: float | None) -> list[str] | None:
    """A command that plays `path` from `start_s` with a player found on this machine, or None."""
    start = f"{start_s or 0:.1f}"
    if shutil.which("mpv"):
        return ["mpv", "--no-video", f"--start={start}", path]
    if shutil.which("ffplay"):
        return ["ffplay", "-nodisp", "-autoexit", "-loglevel", "error", "-ss", start, path]
    if shutil.which("cvlc"):
        return ["cvlc", "--play-and-exit", f"--start-time={start}", path]
    if sys.platform == "darwin" and shutil.which("afplay"):
        return ["afplay", path]  # afplay cannot seek; it plays from the start
    return None


def play(path: str, start_s: float | None) -> None:
    """Play a track in the foreground; raises RuntimeError saying why it cannot."""
    if not os.path.exists(path):
        raise RuntimeError(f"cannot play {path}: the file is not there")
    command = player_command(path, start_s)
    if command is None and sys.platform == "win32":
        os.startfile(path)  # the default player; it cannot be told where to start
        return
    if command is None:
        raise RuntimeError("cannot play: no audio player found (install mpv or ffmpeg, which has ffplay)")
    result = subprocess.run(command, check=False, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:  # no audio device, say, or a file the player cannot decode
        detail = (result.stderr or "").strip().splitlines()
        raise RuntimeError(f"cannot play {path}: {command[0]} failed (exit {result.returncode})"
                           + (f": {detail[-1]}" if detail else ""))


def bytes_player_command(start_s: float | None) -> list[str] | None:
    """A command that plays audio read from its standard input from `start_s`, or None when no player found here
    takes a stream (mpv and ffplay do; cvlc and afplay want a file)."""
    start = f"{start_s or 0:.1f}"
    if shutil.which("mpv"):
        return ["mpv", "--no-video", f"--start={start}", "-"]
    if shutil.which("ffplay"):
        return ["ffplay", "-nodisp", "-autoexit", "-loglevel", "error", "-ss", start, "-i", "pipe:0"]
    return None


def play_bytes(data: bytes, name: str, start_s: float | None) -> bool:
    """Play a track's audio held in memory (a server's song, never written to disk) in the foreground, through a
    player's standard input. False when no player here takes audio that way; RuntimeError when it fails."""
    command = bytes_player_command(start_s)
    if command is None:
        return False
    result = subprocess.run(command, input=data, check=False, stderr=subprocess.PIPE)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"cannot play {name}: {command[0]} failed (exit {result.returncode})"
                           + (f": {detail[-1]}" if detail else ""))
    return True
