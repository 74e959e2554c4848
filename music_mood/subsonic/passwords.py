"""A server's password: $MUSIC_MOOD_SUBSONIC_PASSWORD, else the password store (one JSON file, mode 0600, in the
user's config folder), else a terminal prompt."""
from __future__ import annotations

import getpass
import json
import os
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from music_mood.storage import write_atomically
from music_mood.subsonic.address import PASSWORD_ENV, SubsonicServer
from music_mood.subsonic.errors import PasswordError

CONFIG_ENV = "MUSIC_MOOD_CONFIG"  # the folder of per-user settings; default: $XDG_CONFIG_HOME/music-mood
PASSWORD_FILE = "subsonic-passwords.json"


def config_folder(environ: Mapping[str, str] | None = None) -> Path:
    """The folder of this user's settings: $MUSIC_MOOD_CONFIG, else $XDG_CONFIG_HOME/music-mood, else
    ~/.config/music-mood (on Windows %APPDATA%/music-mood)."""
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    if os.name == "nt" and env.get("APPDATA"):
        return Path(env["APPDATA"]) / "music-mood"
    return Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "music-mood"


def password_store_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where server passwords are kept: one JSON file in the user's config folder (config_folder), mode 0600.

    Not in the library folder: a library may be shared with other users (storage.write_atomically keeps its files
    readable by them) or synced to a NAS, and a password belongs to one user. Not hashed: Subsonic's token is
    md5(password + a fresh salt) on every request, so the client needs the password itself. Mode 0600 keeps it
    from other users, not from the user's own programs (as ~/.netrc does).
    """
    return config_folder(environ) / PASSWORD_FILE


def _read_store(path: Path) -> dict[str, str]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise PasswordError(f"cannot read the password store {path}: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PasswordError(f"the password store {path} can be read by other users "
                                f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}")
        try:
            data = json.loads(f.read().decode("utf-8"))
            servers = data["servers"]
            if not isinstance(servers, dict) or not all(isinstance(v, str) for v in servers.values()):
                raise TypeError("servers is not a map of passwords")
        except (ValueError, KeyError, TypeError) as e:
            # the reason only, never the text: it holds passwords
            raise PasswordError(f"the password store {path} is damaged ({type(e).__name__}); remove it and add "
                                "the server again") from None
    return servers


def stored_password(server: SubsonicServer, path: Path | None = None) -> str | None:
    """The password stored for `server` (user, host, port and prefix), or None."""
    return _read_store(path or password_store_path()).get(str(server))


def store_password(server: SubsonicServer, password: str, path: Path | None = None) -> Path:
    """Keep `password` for `server` in the password store, replacing any it had; returns the store's path.

    The file is replaced atomically (a temp file in the same folder, mode 0600 from its creation, fsynced, renamed),
    so a crash leaves the old store or the new one; its folder is made 0700 when it is created.
    """
    path = path or password_store_path()
    servers = _read_store(path)
    servers[str(server)] = password
    _write_store(path, servers)
    return path


def _write_store(path: Path, servers: dict[str, str]) -> None:
    """Replace the store with `servers`, atomically: 0600 from the moment it exists (mkstemp's mode, kept), in a
    folder only the user can enter."""
    payload = json.dumps({"version": 1, "servers": servers}, ensure_ascii=False, indent=1).encode("utf-8")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, lambda f: f.write(payload), mode=0o600)


def forget_password(server: SubsonicServer, path: Path | None = None) -> bool:
    """Remove `server`'s password from the store; whether it had one."""
    path = path or password_store_path()
    servers = _read_store(path)
    if str(server) not in servers:
        return False
    del servers[str(server)]
    _write_store(path, servers)
    return True


def password_for(server: SubsonicServer, path: Path | None = None, environ: Mapping[str, str] | None = None,
                 prompt: Callable[[str], str] = getpass.getpass, interactive: bool | None = None) -> str:
    """`server`'s password: $MUSIC_MOOD_SUBSONIC_PASSWORD when set, else the stored one, else asked on the terminal
    (`prompt`, getpass: not echoed). PasswordError when there is none and no terminal to ask on."""
    env = os.environ if environ is None else environ
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    stored = stored_password(server, path)
    if stored is not None:
        return stored
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    if not interactive:
        raise PasswordError(f"no password for {server}: set {PASSWORD_ENV} or run this on a terminal to type it")
    password = prompt(f"Password for {server}: ")
    if not password:
        raise PasswordError(f"no password given for {server}")
    return password
