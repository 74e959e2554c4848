"""Connecting to a server: its API version probed without a credential, then a `SubsonicClient` logged in the way
that version wants (a token from API 1.13, else enc:)."""
from __future__ import annotations

import json

import httpx

from music_mood.subsonic.address import SubsonicServer
from music_mood.subsonic.errors import ERROR_TOKEN_NOT_SUPPORTED, NotSubsonicServerError, SubsonicAPIError, one_line
from music_mood.subsonic.media import SongMedia
from music_mood.subsonic.server_playlists import ServerPlaylists
from music_mood.subsonic.session import CLIENT_API_VERSION, CLIENT_NAME, TIMEOUT_S, unreachable, version_tuple
from music_mood.subsonic.songs import SongListing


class SubsonicClient(SongListing, SongMedia, ServerPlaylists):
    """A session with one server, authenticated: made by `connect`, which learns the API version first.

    `auth` is "token" or "enc" (how the password goes on the wire); `api_version` the server's, e.g. "1.10.2".
    The wire is session.SubsonicSession; the calls are grouped by what they are about: songs.SongListing
    (`iter_songs`), media.SongMedia (`download_song`, `proxy_stream`), server_playlists.ServerPlaylists
    (`save_playlist`, `get_playlist`, `list_playlists`).
    """


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
        raise unreachable(server, e, one_line) from None
    try:
        version = json.loads(response.content)["subsonic-response"]["version"]
        if not isinstance(version, str) or version_tuple(version) == (0,):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        content_type = one_line(response.headers.get("content-type", ""), 60) or "with no content type"
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
