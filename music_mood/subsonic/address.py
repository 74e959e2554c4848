"""A Subsonic server's address: `http(s)://USER@HOST[:PORT][/prefix]` read into a `SubsonicServer`, never with a
password in it."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from music_mood.subsonic.errors import ServerAddressError

# Where a password goes instead of the address (passwords.password_for reads it); named here, in the error that
# turns a password in an address away, so that this module needs nothing from the password store.
PASSWORD_ENV = "MUSIC_MOOD_SUBSONIC_PASSWORD"


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
