"""A song's audio from the server: the whole file into memory (`download_song`), or `stream` relayed with the
browser's Range header for playback (`proxy_stream`, a `StreamResponse`)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import httpx

from music_mood.subsonic.errors import (
    ERROR_NOT_AUTHORIZED,
    DownloadTooLargeError,
    NotSubsonicServerError,
    SubsonicAPIError,
)
from music_mood.subsonic.session import SubsonicSession

DOWNLOAD_LIMIT_BYTES = 1 << 30  # 1 GiB: no song is this large, a misbehaving server's endless answer is
# The response headers a playback proxy passes on to the browser: what a media element needs, nothing that
# names the server (Location) or carries its state (Set-Cookie).
PROXY_HEADERS = ("content-type", "content-length", "content-range", "accept-ranges", "last-modified", "etag")


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


class SongMedia(SubsonicSession):
    """The session's audio requests (a part of `client.SubsonicClient`)."""

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
