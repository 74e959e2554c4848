"""A Subsonic/OpenSubsonic server as a music source: its address, its password, and the few API calls we need.

What it does, each against the server's own REST API (https://www.subsonic.org/pages/api.jsp, and the
OpenSubsonic extensions at https://opensubsonic.netlify.app):
- `parse_server("http://alice@host:4533/music")` reads an address into a `SubsonicServer` (no password in it);
- `password_for(server)` finds the password: `MUSIC_MOOD_SUBSONIC_PASSWORD`, else the password store
  (`store_password`: one file, mode 0600, in the user's config folder, never in the library folder or its
  database; see `password_store_path`), else a terminal prompt;
- `connect(server, password)` pings the server, learns its API version and chooses how to authenticate: a token
  (`t` = md5(password + salt), `s` = salt) from API 1.13, else `p=enc:<hex>` (Supysonic 0.7 speaks 1.10.2 and
  refuses tokens);
- `SubsonicClient.iter_songs` lists every song page by page, `download_song` fetches one into memory,
  `proxy_stream` relays `stream` with a Range header for playback, and `save_playlist` creates or replaces a
  playlist by name.

The password never leaves this module except on the wire: not in a repr, an error, a log line (the URLs httpx
logs are redacted, see `_RedactCredentials`) or a URL given to a caller. Every failure is a `SubsonicError` whose
message is one line.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx

from music_mood.playlists import check_playlist_name
from music_mood.storage import crash_point, fsync_dir

PASSWORD_ENV = "MUSIC_MOOD_SUBSONIC_PASSWORD"
CONFIG_ENV = "MUSIC_MOOD_CONFIG"  # the folder of per-user settings; default: $XDG_CONFIG_HOME/music-mood
PASSWORD_FILE = "subsonic-passwords.json"
CLIENT_NAME = "music-mood"
# The newest API version we speak: sent to the first ping, before the server has said its own.
CLIENT_API_VERSION = "1.16.1"
TOKEN_AUTH_SINCE = (1, 13, 0)  # Subsonic API 1.13.0 added token authentication (t, s)
TIMEOUT_S = 30.0
DOWNLOAD_LIMIT_BYTES = 1 << 30  # 1 GiB: no song is this large, a misbehaving server's endless answer is
# The response headers a playback proxy passes on to the browser: what a media element needs, nothing that
# names the server (Location) or carries its state (Set-Cookie).
PROXY_HEADERS = ("content-type", "content-length", "content-range", "accept-ranges", "last-modified", "etag")

# Subsonic error codes (the API's "error" element)
ERROR_WRONG_CREDENTIALS = 40
ERROR_TOKEN_NOT_SUPPORTED = 41  # OpenSubsonic: "token authentication not supported for LDAP users"
ERROR_NOT_AUTHORIZED = 50
ERROR_NOT_FOUND = 70


class SubsonicError(Exception):
    """A Subsonic server could not do what was asked; the message is one line and holds no credential."""


class ServerAddressError(SubsonicError, ValueError):
    """The text given as a server address is not one."""


class ServerUnreachableError(SubsonicError):
    """Nothing answers at the server's address (down, wrong host or port, no network, a timeout)."""


class NotSubsonicServerError(SubsonicError):
    """Something answers at the address, but not the Subsonic API."""


class WrongPasswordError(SubsonicError):
    """The server refused the user name or the password (Subsonic error 40)."""


class SubsonicAPIError(SubsonicError):
    """The server answered a request with a Subsonic error (`code`, the server's message)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class DownloadTooLargeError(SubsonicError):
    """A song is larger than the download limit."""


class PasswordError(SubsonicError):
    """No password could be found, or the password store cannot be used."""


def _one_line(text: object, limit: int = 300) -> str:
    """`text` on one line, bounded: a server's message goes into our errors, which are one line each."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------------- addresses

@dataclass(frozen=True)
class SubsonicServer:
    """A Subsonic server and the user to log in as: `http(s)://USER@HOST[:PORT][/prefix]`, no password.

    `str()` gives the address as the user wrote it (normalised), which is also its key in the password store.
    """

    scheme: str  # "http" or "https"
    user: str
    host: str  # a name or an address; an IPv6 address without brackets
    port: int
    prefix: str = ""  # "" or "/path" with no trailing slash: where the server is mounted behind a proxy

    def __str__(self) -> str:
        return f"{self.scheme}://{quote(self.user, safe='')}@{self._netloc()}{self.prefix}"

    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The server's address with no user in it (the API lives under `base_url + "/rest/"`)."""
        return f"{self.scheme}://{self._netloc()}{self.prefix}"


def parse_server(address: str) -> SubsonicServer:
    """Read `http(s)://USER@HOST[:PORT][/prefix]` (the port defaults to 80 / 443). ServerAddressError says what is
    wrong, and never repeats a password someone put into the address."""
    text = address.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:  # a port that is not a number, a bad IPv6 address
        raise ServerAddressError(f"not a server address: {_without_password(text)!r} ({e})") from None
    shown = _without_password(text)
    if parts.scheme not in ("http", "https"):
        raise ServerAddressError(f"a Subsonic server's address starts with http:// or https://, not {shown!r}")
    if parts.password is not None:
        raise ServerAddressError(
            f"put no password in the address ({shown!r}): set {PASSWORD_ENV} or type it when asked")
    if not parts.username:
        raise ServerAddressError(f"name the user in the address: http://USER@HOST:PORT, not {shown!r}")
    if not parts.hostname:
        raise ServerAddressError(f"no host in {shown!r}")
    if parts.query or parts.fragment:
        raise ServerAddressError(f"a server address has no ?query or #fragment: {shown!r}")
    prefix = parts.path.rstrip("/")
    if prefix.endswith("/rest"):  # the API's own folder: the server is the part before it
        prefix = prefix.removesuffix("/rest")
    return SubsonicServer(scheme=parts.scheme, user=unquote(parts.username), host=parts.hostname,
                          port=port or (443 if parts.scheme == "https" else 80), prefix=prefix)


def _without_password(text: str) -> str:
    """`text` with whatever stands between "://user:" and "@" replaced by ***."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", text)


# ---------------------------------------------------------------------------------------------------- passwords

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
    """Replace the store with `servers`. Not storage.write_atomically: that one gives its file the umask's mode
    (a library is shared), and this file must be 0600 from the moment it exists."""
    payload = json.dumps({"version": 1, "servers": servers}, ensure_ascii=False, indent=1).encode("utf-8")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            crash_point(f"write {path.name}")
            f.write(payload)
            f.flush()
            crash_point(f"fsync {path.name}")
            os.fsync(f.fileno())
        crash_point(f"rename {path.name}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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


# ---------------------------------------------------------------------------------------------------- the client

def _unreachable(server: SubsonicServer, error: httpx.HTTPError, scrub: Callable[[str], str]) -> ServerUnreachableError:
    """The one-line error for a request that got no HTTP answer; `scrub` blanks credentials in httpx's words."""
    if isinstance(error, httpx.TimeoutException):
        why = "it did not answer in time"
    elif isinstance(error, httpx.ConnectError):
        why = "cannot connect: " + scrub(str(error) or type(error).__name__)
    else:
        why = scrub(f"{type(error).__name__}: {error}")
    return ServerUnreachableError(f"the Subsonic server at {server.base_url} is unreachable ({why})")


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


class _RedactCredentials(logging.Filter):
    """Blank the credentials in URLs that httpx logs ("HTTP Request: GET http://…?u=…&t=…&s=…"): a log file
    at INFO level would otherwise hold a replayable token, or with enc: the password itself."""

    PATTERN = re.compile(r"([?&](?:p|t|s)=)[^&\s\"']*")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/rest/" not in message:  # not a Subsonic request: another user of httpx (the hub, gradio)
            return True
        redacted = self.PATTERN.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTOR = _RedactCredentials()


def _install_redactor() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


@dataclass(frozen=True)
class Song:
    """One song of a server, as its song lists give it (what a build keeps of it)."""

    id: str
    title: str
    artist: str | None = None
    album: str | None = None
    genre: str | None = None
    duration: float | None = None  # seconds
    size: int | None = None  # bytes of the original file, when the server says
    suffix: str | None = None  # the original file's extension: "mp3", "opus", …

    @classmethod
    def from_child(cls, child: Mapping) -> Song:
        """A Song from the API's `Child` element (search3's song, getAlbum's song, getMusicDirectory's child)."""
        def number(key, kind):
            try:
                value = kind(child[key])
            except (KeyError, TypeError, ValueError):
                return None
            return value if value >= 0 else None  # Supysonic says size -1 for a file it cannot see

        return cls(id=str(child["id"]), title=str(child.get("title") or child["id"]),
                   artist=child.get("artist"), album=child.get("album"), genre=child.get("genre"),
                   duration=number("duration", float), size=number("size", int), suffix=child.get("suffix"))


@dataclass(frozen=True)
class Playlist:
    """A playlist on the server, read back (getPlaylist): its songs in order."""

    id: str
    name: str
    songs: tuple[Song, ...] = ()

    @property
    def song_ids(self) -> list[str]:
        return [song.id for song in self.songs]


@dataclass
class StreamResponse:
    """What the server answered a playback request: the status (200, 206, 416), the headers a browser needs
    (PROXY_HEADERS only), and the body as an iterator of bytes. Iterate it to the end or call close()."""

    status: int
    headers: dict[str, str]
    body: Iterator[bytes]
    _close: Callable[[], None] = field(repr=False, default=lambda: None)

    def close(self) -> None:
        self._close()


def _as_list(value) -> list:
    """An API element that may be absent, one object or a list, as a list (Subsonic's JSON is XML translated:
    Supysonic drops empty lists, older servers give a lone element as an object)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class SubsonicClient:
    """A session with one server, authenticated: made by `connect`, which learns the API version first.

    `auth` is "token" or "enc" (how the password goes on the wire); `api_version` the server's, e.g. "1.10.2".
    """

    def __init__(self, server: SubsonicServer, password: str, api_version: str, *, auth: str | None = None,
                 timeout: float = TIMEOUT_S, transport: httpx.BaseTransport | None = None):
        self.server = server
        self.api_version = api_version
        self.auth = auth or ("token" if _version_tuple(api_version) >= TOKEN_AUTH_SINCE else "enc")
        self._password = password
        self._secrets: set[str] = {password, password.encode("utf-8").hex()}
        # The salts and tokens of the latest requests, blanked in errors too; bounded: a build makes thousands.
        self._recent_tokens: deque[str] = deque(maxlen=64)
        self._http = httpx.Client(base_url=server.base_url + "/rest/", timeout=timeout, transport=transport,
                                  follow_redirects=False, headers={"Accept-Encoding": "identity"})
        _install_redactor()

    def __repr__(self) -> str:
        return f"SubsonicClient({str(self.server)!r}, api_version={self.api_version!r}, auth={self.auth!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SubsonicClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the wire

    def _params(self, extra: Mapping | Sequence[tuple[str, object]] = ()) -> list[tuple[str, str]]:
        params = [("u", self.server.user), ("v", self.api_version), ("c", CLIENT_NAME), ("f", "json")]
        if self.auth == "token":
            salt = secrets.token_hex(8)
            token = hashlib.md5((self._password + salt).encode("utf-8")).hexdigest()
            self._recent_tokens.extend((salt, token))
            params += [("t", token), ("s", salt)]
        else:
            params.append(("p", "enc:" + self._password.encode("utf-8").hex()))
        items = extra.items() if isinstance(extra, Mapping) else extra
        params += [(key, str(value)) for key, value in items if value is not None]
        return params

    def known_secrets(self) -> set[str]:
        """What must never be shown: the password, its enc: hex, and the latest tokens and salts."""
        return {secret for secret in (*self._secrets, *self._recent_tokens) if secret}

    def _scrub(self, text: str) -> str:
        """`text` on one line with the credentials of this session (known_secrets, and any t, s or p of a URL)
        blanked."""
        text = _RedactCredentials.PATTERN.sub(r"\1***", text)
        for secret in sorted(self.known_secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return _one_line(text)

    def _unreachable(self, error: httpx.HTTPError) -> ServerUnreachableError:
        return _unreachable(self.server, error, self._scrub)

    def call(self, method: str, params: Mapping | Sequence[tuple[str, object]] = ()) -> dict:
        """Call the API `method` (e.g. "search3") with `params`; the `subsonic-response` object when its status is
        ok. Raises WrongPasswordError, SubsonicAPIError, NotSubsonicServerError or ServerUnreachableError."""
        try:
            response = self._http.get(f"{method}.view", params=self._params(params))
        except httpx.HTTPError as e:
            raise self._unreachable(e) from None  # from None: httpx's error holds the URL, with the token
        return self._subsonic_response(method, response.status_code, response.headers.get("content-type", ""),
                                       response.content)

    def _subsonic_response(self, method: str, status: int, content_type: str, content: bytes) -> dict:
        try:
            body = json.loads(content)["subsonic-response"]
            if not isinstance(body, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise NotSubsonicServerError(
                f"{self.server.base_url} does not answer as a Subsonic server (HTTP {status} "
                f"{_one_line(content_type, 60) or 'with no content type'} to {method})") from None
        if body.get("status") == "ok":
            return body
        error = body.get("error") or {}
        code, message = error.get("code"), self._scrub(error.get("message") or "no message")
        if code == ERROR_WRONG_CREDENTIALS:
            raise WrongPasswordError(f"{self.server} refused the user name or password ({message})")
        raise SubsonicAPIError(f"{self.server}: {method} failed: Subsonic error {code}: {message}", code)

    # -- songs

    def iter_songs(self, page_size: int = 500, method: str = "auto") -> Iterator[Song]:
        """Every song of the server, once each, page by page (`page_size` songs or albums a request).

        `method`: "search3" (an empty query, songCount/songOffset), "albums" (getAlbumList2 alphabeticalByName,
        then getAlbum for each album), "folders" (getAlbumList + getMusicDirectory: servers without ID3 lists), or
        "auto": search3 where it answers an empty query with songs, else the album lists.
        """
        if method not in ("auto", "search3", "albums", "folders"):
            raise ValueError(f"unknown listing method {method!r}")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        if method == "auto":
            method = self.listing_method()
        if method == "search3":
            yield from self._songs_by_search(page_size)
        else:
            yield from self._songs_by_albums(page_size, id3=method == "albums")

    def listing_method(self) -> str:
        """How iter_songs lists this server: "search3" when an empty search3 query answers songs (or the server
        has no albums either), else "albums" (or "folders" for an API older than 1.8, which has no getAlbumList2)."""
        albums = "albums" if _version_tuple(self.api_version) >= (1, 8, 0) else "folders"
        try:
            first = self._search_page(0, 1)
        except SubsonicAPIError:
            return albums
        if first:
            return "search3"
        listed = self.call("getAlbumList2" if albums == "albums" else "getAlbumList",
                           {"type": "alphabeticalByName", "size": 1})
        has_albums = bool(_as_list((listed.get("albumList2") or listed.get("albumList") or {}).get("album")))
        return albums if has_albums else "search3"

    def _search_page(self, offset: int, count: int) -> list[dict]:
        body = self.call("search3", {"query": "", "songCount": count, "songOffset": offset,
                                     "artistCount": 0, "albumCount": 0})
        return _as_list((body.get("searchResult3") or {}).get("song"))

    def _songs_by_search(self, page_size: int) -> Iterator[Song]:
        seen: set[str] = set()
        offset = 0
        while True:
            page = self._search_page(offset, page_size)
            for child in page:
                song = Song.from_child(child)
                if song.id not in seen:
                    seen.add(song.id)
                    yield song
            if len(page) < page_size:
                return
            offset += len(page)

    def _songs_by_albums(self, page_size: int, id3: bool) -> Iterator[Song]:
        list_method, list_key = ("getAlbumList2", "albumList2") if id3 else ("getAlbumList", "albumList")
        seen: set[str] = set()
        offset = 0
        while True:
            body = self.call(list_method, {"type": "alphabeticalByName", "size": page_size, "offset": offset})
            albums = _as_list((body.get(list_key) or {}).get("album"))
            for album in albums:
                for child in self._album_songs(str(album["id"]), id3):
                    song = Song.from_child(child)
                    if song.id not in seen:
                        seen.add(song.id)
                        yield song
            if len(albums) < page_size:
                return
            offset += len(albums)

    def _album_songs(self, album_id: str, id3: bool) -> list[dict]:
        if id3:
            return _as_list((self.call("getAlbum", {"id": album_id}).get("album") or {}).get("song"))
        children = _as_list((self.call("getMusicDirectory", {"id": album_id}).get("directory") or {}).get("child"))
        return [child for child in children if not child.get("isDir") and not child.get("isVideo")]

    # -- audio

    def download_song(self, song_id: str, max_bytes: int = DOWNLOAD_LIMIT_BYTES) -> bytes:
        """The song's file, read into memory as the server sends it: `download` (the original file, never
        transcoded), else `stream` with format=raw when the server refuses downloads to this user.
        DownloadTooLargeError past `max_bytes` (said by Content-Length, or counted while reading)."""
        try:
            return self._fetch_bytes("download", {"id": song_id}, max_bytes)
        except SubsonicAPIError as e:
            if e.code != ERROR_NOT_AUTHORIZED:
                raise
        return self._fetch_bytes("stream", {"id": song_id, "format": "raw"}, max_bytes)

    def _fetch_bytes(self, method: str, params: Mapping, max_bytes: int) -> bytes:
        try:
            with self._http.stream("GET", f"{method}.view", params=self._params(params)) as response:
                self._check_media(method, response)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise DownloadTooLargeError(self._too_large(params["id"], int(declared), max_bytes))
                chunks, total = [], 0
                for chunk in response.iter_bytes(1 << 16):
                    total += len(chunk)
                    if total > max_bytes:
                        raise DownloadTooLargeError(self._too_large(params["id"], total, max_bytes))
                    chunks.append(chunk)
        except httpx.HTTPError as e:
            raise self._unreachable(e) from None
        return b"".join(chunks)

    @staticmethod
    def _too_large(song_id: str, size: int, max_bytes: int) -> str:
        return f"song {song_id} is larger than the download limit ({size / 1e6:.1f} MB > {max_bytes / 1e6:.1f} MB)"

    def _check_media(self, method: str, response: httpx.Response) -> None:
        """A media request that answers a Subsonic error does so as a JSON (or XML) document, often with HTTP
        200: raise it as the API error it is."""
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in ("application/json", "text/json", "text/xml", "application/xml") or \
                (response.status_code >= 400 and response.status_code != 416):
            content = response.read()
            try:
                self._subsonic_response(method, response.status_code, content_type, content)
            except NotSubsonicServerError:
                raise SubsonicAPIError(f"{self.server}: {method} failed: HTTP {response.status_code}",
                                       None) from None
            raise SubsonicAPIError(f"{self.server}: {method} answered {content_type or 'no content type'}, "
                                   "not audio", None)

    def proxy_stream(self, song_id: str, range_header: str | None = None, *, format: str | None = None,
                     max_bit_rate: int | None = None) -> StreamResponse:
        """Ask the server to `stream` the song, passing the browser's Range header on; the answer to relay to the
        browser: status (200, 206 or 416), the PROXY_HEADERS, and the bytes (the caller must exhaust or close
        it). `format`/`max_bit_rate` ask the server to transcode ("raw": never). The browser sees none of the
        server's address or credentials: the app serves these bytes from its own URL."""
        headers = {"Range": range_header} if range_header else {}
        params = {"id": song_id, "format": format, "maxBitRate": max_bit_rate}
        request = self._http.build_request("GET", "stream.view", params=self._params(params), headers=headers)
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as e:
            raise self._unreachable(e) from None
        try:
            self._check_media("stream", response)
        except BaseException:
            response.close()
            raise
        passed = {name: response.headers[name] for name in PROXY_HEADERS if name in response.headers}

        def body() -> Iterator[bytes]:
            try:
                yield from response.iter_raw(1 << 16)
            except httpx.HTTPError as e:
                raise self._unreachable(e) from None
            finally:
                response.close()

        return StreamResponse(response.status_code, passed, body(), response.close)

    # -- playlists

    def list_playlists(self) -> list[dict]:
        """The playlists the user sees (getPlaylists): the API's Playlist objects (id, name, owner, songCount)."""
        return _as_list((self.call("getPlaylists").get("playlists") or {}).get("playlist"))

    def get_playlist(self, playlist_id: str) -> Playlist:
        """A playlist and its songs in order (getPlaylist)."""
        body = self.call("getPlaylist", {"id": playlist_id}).get("playlist") or {}
        songs = tuple(Song.from_child(entry) for entry in _as_list(body.get("entry")))
        return Playlist(id=str(body.get("id", playlist_id)), name=str(body.get("name", "")), songs=songs)

    def _own_playlist_named(self, name: str) -> str | None:
        for playlist in self.list_playlists():
            owner = playlist.get("owner")
            if playlist.get("name") == name and (owner is None or owner == self.server.user):
                return str(playlist["id"])
        return None

    def save_playlist(self, name: str, song_ids: Sequence[str]) -> Playlist:
        """Make the user's playlist `name` hold exactly `song_ids`, in order: the user's existing playlist of that
        name is replaced (never a second one of the same name), else a new one is created. Returns it, read back.

        Replacing uses createPlaylist with playlistId (every API version has it: the songs are replaced); a server
        that refuses it gets updatePlaylist (remove every entry, add the new ones; API 1.8+). The song ids go in the
        URL: a few hundred fit every server's URL limit. A name that cannot be a playlist's is PlaylistNameError
        (playlists.check_playlist_name: one printable line, no path separator)."""
        name = check_playlist_name(name)
        existing = self._own_playlist_named(name)
        songs = [("songId", song_id) for song_id in song_ids]
        if existing is None:
            body = self.call("createPlaylist", [("name", name), *songs])
            created = body.get("playlist")  # API 1.14+ answers the playlist; older ones answer nothing
            playlist_id = str(created["id"]) if created and "id" in created else self._own_playlist_named(name)
            if playlist_id is None:
                raise SubsonicAPIError(f"{self.server}: the playlist {name!r} was created but is not listed")
            return self.get_playlist(playlist_id)
        try:
            self.call("createPlaylist", [("playlistId", existing), *songs])
        except SubsonicAPIError as e:
            if e.code == ERROR_NOT_AUTHORIZED:
                raise
            self.replace_playlist_songs(existing, song_ids)
        return self.get_playlist(existing)

    def replace_playlist_songs(self, playlist_id: str, song_ids: Sequence[str]) -> None:
        """Replace a playlist's songs with updatePlaylist: remove every entry (by index), add `song_ids`."""
        current = self.get_playlist(playlist_id)
        self.call("updatePlaylist", [("playlistId", playlist_id),
                                     *(("songIndexToRemove", i) for i in range(len(current.songs))),
                                     *(("songIdToAdd", song_id) for song_id in song_ids)])


def probe_api_version(server: SubsonicServer, *, timeout: float = TIMEOUT_S,
                      transport: httpx.BaseTransport | None = None) -> str:
    """The server's API version, from a `ping` that sends no credential (a Subsonic server answers its version
    even with the error "a required parameter is missing"). NotSubsonicServerError when the answer is not
    Subsonic's, ServerUnreachableError when nothing answers."""
    params = {"u": server.user, "v": CLIENT_API_VERSION, "c": CLIENT_NAME, "f": "json"}
    try:
        with httpx.Client(timeout=timeout, transport=transport, follow_redirects=False) as http:
            response = http.get(server.base_url + "/rest/ping.view", params=params)
    except httpx.HTTPError as e:
        raise _unreachable(server, e, _one_line) from None
    try:
        version = json.loads(response.content)["subsonic-response"]["version"]
        if not isinstance(version, str) or _version_tuple(version) == (0,):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        content_type = _one_line(response.headers.get("content-type", ""), 60) or "with no content type"
        hint = "; it redirects: give the address it redirects to (https://?)" if response.is_redirect else ""
        raise NotSubsonicServerError(f"{server.base_url} does not answer as a Subsonic server "
                                     f"(HTTP {response.status_code} {content_type} to ping{hint})") from None
    return version


def connect(server: SubsonicServer, password: str, *, timeout: float = TIMEOUT_S,
            transport: httpx.BaseTransport | None = None) -> SubsonicClient:
    """A client for `server`, logged in: learns the API version (probe_api_version), then pings with the password
    as that version wants it (a token from 1.13, else enc:). A server that refuses the token (OpenSubsonic error
    41, LDAP users) is asked again with enc:. WrongPasswordError when the server refuses the password."""
    version = probe_api_version(server, timeout=timeout, transport=transport)
    client = SubsonicClient(server, password, version, timeout=timeout, transport=transport)
    try:
        try:
            client.call("ping")
        except SubsonicAPIError as e:
            if client.auth != "token" or e.code != ERROR_TOKEN_NOT_SUPPORTED:
                raise
            client.auth = "enc"
            client.call("ping")
    except BaseException:
        client.close()
        raise
    return client

