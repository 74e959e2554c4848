"""A Subsonic/OpenSubsonic server as a music source: its address, its password, and the few API calls we need.

What it does, each against the server's own REST API (https://www.subsonic.org/pages/api.jsp, and the
OpenSubsonic extensions at https://opensubsonic.netlify.app):
- `parse_server("http://alice@host:4533/music")` reads an address into a `SubsonicServer` (no password in it;
  address.py);
- `password_for(server)` finds the password: `MUSIC_MOOD_SUBSONIC_PASSWORD`, else the password store
  (`store_password`: one file, mode 0600, in the user's config folder, never in the library folder or its
  database; see `password_store_path`), else a terminal prompt (passwords.py);
- `connect(server, password)` pings the server, learns its API version and chooses how to authenticate: a token
  (`t` = md5(password + salt), `s` = salt) from API 1.13, else `p=enc:<hex>` (Supysonic 0.7 speaks 1.10.2 and
  refuses tokens) (client.py; the requests themselves are session.py);
- `SubsonicClient.iter_songs` lists every song page by page (songs.py), `download_song` fetches one into memory and
  `proxy_stream` relays `stream` with a Range header for playback (media.py), and `save_playlist` creates or
  replaces a playlist by name (server_playlists.py).

The password never leaves this package except on the wire: not in a repr, an error, a log line (the URLs httpx
logs are redacted, see session._RedactCredentials) or a URL given to a caller. Every failure is a `SubsonicError`
whose message is one line (errors.py).

The modules import downwards only, never in a cycle: errors; address (errors); passwords (address); session
(address); songs and media (session); server_playlists (session, songs); client (songs, media, server_playlists).
"""
from __future__ import annotations

from music_mood.subsonic.address import PASSWORD_ENV, SubsonicServer, parse_server
from music_mood.subsonic.client import SubsonicClient, connect, probe_api_version
from music_mood.subsonic.errors import (
    ERROR_NOT_AUTHORIZED,
    ERROR_NOT_FOUND,
    ERROR_TOKEN_NOT_SUPPORTED,
    ERROR_WRONG_CREDENTIALS,
    DownloadTooLargeError,
    NotSubsonicServerError,
    PasswordError,
    ServerAddressError,
    ServerUnreachableError,
    SubsonicAPIError,
    SubsonicError,
    WrongPasswordError,
)
from music_mood.subsonic.media import DOWNLOAD_LIMIT_BYTES, PROXY_HEADERS, StreamResponse
from music_mood.subsonic.passwords import (
    CONFIG_ENV,
    PASSWORD_FILE,
    config_folder,
    forget_password,
    password_for,
    password_store_path,
    store_password,
    stored_password,
)
from music_mood.subsonic.server_playlists import Playlist
from music_mood.subsonic.session import CLIENT_API_VERSION, CLIENT_NAME, TIMEOUT_S, TOKEN_AUTH_SINCE
from music_mood.subsonic.songs import Song

__all__ = [
    "CLIENT_API_VERSION",
    "CLIENT_NAME",
    "CONFIG_ENV",
    "DOWNLOAD_LIMIT_BYTES",
    "ERROR_NOT_AUTHORIZED",
    "ERROR_NOT_FOUND",
    "ERROR_TOKEN_NOT_SUPPORTED",
    "ERROR_WRONG_CREDENTIALS",
    "PASSWORD_ENV",
    "PASSWORD_FILE",
    "PROXY_HEADERS",
    "TIMEOUT_S",
    "TOKEN_AUTH_SINCE",
    "DownloadTooLargeError",
    "NotSubsonicServerError",
    "PasswordError",
    "Playlist",
    "ServerAddressError",
    "ServerUnreachableError",
    "Song",
    "StreamResponse",
    "SubsonicAPIError",
    "SubsonicClient",
    "SubsonicError",
    "SubsonicServer",
    "WrongPasswordError",
    "config_folder",
    "connect",
    "forget_password",
    "parse_server",
    "password_for",
    "password_store_path",
    "probe_api_version",
    "store_password",
    "stored_password",
]
