"""The wire to a Subsonic server: an authenticated session that calls the REST API and turns its answers and
failures into our errors, with the credentials blanked in every error and in the URLs httpx logs."""
from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import httpx

from music_mood.subsonic.address import SubsonicServer
from music_mood.subsonic.errors import (
    ERROR_WRONG_CREDENTIALS,
    NotSubsonicServerError,
    ServerUnreachableError,
    SubsonicAPIError,
    WrongPasswordError,
    one_line,
)

CLIENT_NAME = "music-mood"
# The newest API version we speak: sent to the first ping, before the server has said its own.
CLIENT_API_VERSION = "1.16.1"
TOKEN_AUTH_SINCE = (1, 13, 0)  # Subsonic API 1.13.0 added token authentication (t, s)
TIMEOUT_S = 30.0

Params = Mapping | Sequence[tuple[str, object]]
_Session = TypeVar("_Session", bound="SubsonicSession")


def unreachable(server: SubsonicServer, error: httpx.HTTPError, scrub: Callable[[str], str]) -> ServerUnreachableError:
    """The one-line error for a request that got no HTTP answer; `scrub` blanks credentials in httpx's words."""
    if isinstance(error, httpx.TimeoutException):
        why = "it did not answer in time"
    elif isinstance(error, httpx.ConnectError):
        why = "cannot connect: " + scrub(str(error) or type(error).__name__)
    else:
        why = scrub(f"{type(error).__name__}: {error}")
    return ServerUnreachableError(f"the Subsonic server at {server.base_url} is unreachable ({why})")


def version_tuple(version: str) -> tuple[int, ...]:
    """"1.10.2" as (1, 10, 2), for comparing API versions; (0,) for what is not a version."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def as_list(value) -> list:
    """An API element that may be absent, one object or a list, as a list (Subsonic's JSON is XML translated:
    Supysonic drops empty lists, older servers give a lone element as an object)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


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


class SubsonicSession:
    """An authenticated session with one server: every request carries the credentials, every answer is checked.

    `auth` is "token" or "enc" (how the password goes on the wire); `api_version` the server's, e.g. "1.10.2".
    The API's calls built on it (songs, audio, playlists) are mixed into `client.SubsonicClient`.
    """

    def __init__(self, server: SubsonicServer, password: str, api_version: str, *, auth: str | None = None,
                 timeout: float = TIMEOUT_S, transport: httpx.BaseTransport | None = None):
        self.server = server
        self.api_version = api_version
        self.auth = auth or ("token" if version_tuple(api_version) >= TOKEN_AUTH_SINCE else "enc")
        self._password = password
        self._secrets: set[str] = {password, password.encode("utf-8").hex()}
        # The salts and tokens of the latest requests, blanked in errors too; bounded: a build makes thousands.
        self._recent_tokens: deque[str] = deque(maxlen=64)
        self._http = httpx.Client(base_url=server.base_url + "/rest/", timeout=timeout, transport=transport,
                                  follow_redirects=False, headers={"Accept-Encoding": "identity"})
        _install_redactor()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.server)!r}, api_version={self.api_version!r}, auth={self.auth!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self: _Session) -> _Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _params(self, extra: Params = ()) -> list[tuple[str, str]]:
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
        return one_line(text)

    def _unreachable(self, error: httpx.HTTPError) -> ServerUnreachableError:
        return unreachable(self.server, error, self._scrub)

    def call(self, method: str, params: Params = ()) -> dict:
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
                f"{one_line(content_type, 60) or 'with no content type'} to {method})") from None
        if body.get("status") == "ok":
            return body
        error = body.get("error") or {}
        code, message = error.get("code"), self._scrub(error.get("message") or "no message")
        if code == ERROR_WRONG_CREDENTIALS:
            raise WrongPasswordError(f"{self.server} refused the user name or password ({message})")
        raise SubsonicAPIError(f"{self.server}: {method} failed: Subsonic error {code}: {message}", code)
