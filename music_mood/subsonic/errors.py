"""What can go wrong talking to a Subsonic server: the errors (each message one line, no credential in it) and the
Subsonic error codes we act on."""
from __future__ import annotations

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


def one_line(text: object, limit: int = 300) -> str:
    """`text` on one line, bounded: a server's message goes into our errors, which are one line each."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
