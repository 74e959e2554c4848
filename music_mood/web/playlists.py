"""Saving what the page shows as a playlist: the "Save as playlist" box that the Recommend and Slideshow tabs share,
and the /save_playlist endpoint (saved_playlists.save_playlist, behind a check of everything a client sends)."""
from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from music_mood.live import LiveLibrary
from music_mood.playlists import NAME_MAX_CHARS, check_playlist_name
from music_mood.remote import UNKNOWN_SERVER, hidden_servers
from music_mood.saved_playlists import save_playlist
from music_mood.web.errors import logged_as_one_line, user_errors
from music_mood.web.views import saved_playlist_status

MAX_TRACKS = 1_000  # per request: a soundtrack of the page has at most a few hundred, a recommendation 20
MAX_TRACK_CHARS = 4_096  # a track's id or file path in the library (PATH_MAX on Linux)


def requested_tracks(tracks) -> list[str]:
    """The tracks a /save_playlist request names: a list of at most MAX_TRACKS strings of at most MAX_TRACK_CHARS
    each (one string alone is one track); gr.Error for anything else, saying what it takes."""
    if isinstance(tracks, str):
        tracks = [tracks]
    if not isinstance(tracks, list) or not all(isinstance(track, str) for track in tracks):
        raise gr.Error("Name the playlist's tracks as a list of track ids or file paths in the library "
                       "(e.g. processed_music/calm/x.mp3); nothing was saved.")
    if len(tracks) > MAX_TRACKS:
        raise gr.Error(f"A playlist saved here holds at most {MAX_TRACKS} tracks, not {len(tracks)}; nothing was "
                       f"saved.")
    if any(len(track) > MAX_TRACK_CHARS for track in tracks):
        raise gr.Error(f"A track's id or file path is at most {MAX_TRACK_CHARS} characters; nothing was saved.")
    return tracks


def save_tracks(library: LiveLibrary, name, tracks) -> dict:
    """The /save_playlist endpoint: `tracks` (ids or file paths of tracks of the current library, in order) saved
    as the playlist `name` (one printable line of at most NAME_MAX_CHARS characters): files in the library's
    playlists/NAME.m3u8, a Subsonic server's songs in the playlist `name` on their server (through the library's
    connections). Answers SavedPlaylist.to_dict(): {"name", "tracks", "saved": [{"to": "m3u8", "file":
    "playlists/NAME.m3u8", "tracks", "titles"}, {"to": "subsonic", "server", "playlist_id", "tracks", "titles"}],
    "failed": [{"to": "subsonic", "server", "tracks", "titles", "error"}]}, no path of the machine in it (a dict
    with a "path" would be taken for a file to download by gradio_client).

    Everything is checked before anything is written: a bad name, a track the library does not hold (however it
    is spelled: nothing is looked up outside the library), a file of that name that the product did not save.
    Each is one gr.Error, and nothing is written. A server is named by its label (LiveLibrary.server_labels), in
    its errors too, never by its address or user."""
    with user_errors():
        name = check_playlist_name(name)
    keys = requested_tracks(tracks)
    servers = library.server_labels()
    with user_errors(servers=servers):
        return servers_hidden(save_playlist(library.current(), keys, name, library.servers).to_dict(), servers)


def servers_hidden(answer: dict, servers: dict[str, str]) -> dict:
    """A SavedPlaylist.to_dict() answer with each server named by its label in `servers` ({address: label}), or
    remote.UNKNOWN_SERVER when it is no source of the library, in "server" and in its "error"."""
    for place in (place for places in (answer["saved"], answer["failed"]) for place in places):
        if place["to"] == "m3u8":
            continue
        label = servers.get(place["server"], UNKNOWN_SERVER)
        if "error" in place:
            place["error"] = hidden_servers(place["error"], {place["server"]: label, **servers})
        place["server"] = label
    return answer


def recommended_tracks(result) -> list[str]:
    """The tracks of a /recommend answer, in order, as it names them (a file path, or a server song's id);
    gr.Error when there is none yet."""
    tracks = (result or {}).get("results") if isinstance(result, dict) else None
    if not tracks:
        raise gr.Error("Get some recommendations first, then save them as a playlist.")
    return [str(track.get("file_path", "")) for track in tracks if isinstance(track, dict)]


def soundtrack_tracks(slideshow) -> list[str]:
    """The file paths of the session's soundtrack's tracks, in play order; gr.Error when it has none yet."""
    if slideshow is None:
        raise gr.Error("Make a soundtrack first, then save its tracks as a playlist.")
    return [piece.file_path for scene in slideshow.plan.scenes for piece in scene.pieces]


class SavePlaylistBox:
    """A name box, a "Save as playlist" button and the status it answers with, laid out where it is made (in a
    tab's gr.Blocks). `prefix` makes the elements' ids (PREFIX-playlist-name, PREFIX-save-playlist,
    PREFIX-playlist-status)."""

    def __init__(self, prefix: str):
        with gr.Row(equal_height=True):
            self.name = gr.Textbox("", label="Playlist name", placeholder="Sunday morning", max_length=NAME_MAX_CHARS,
                                   scale=3, elem_id=f"{prefix}-playlist-name")
            self.button = gr.Button("Save as playlist", scale=1, elem_id=f"{prefix}-save-playlist")
        self.status = gr.Markdown("", elem_id=f"{prefix}-playlist-status")

    def wire(self, library: LiveLibrary, source: gr.components.Component, tracks_of: Callable[[object], list[str]]):
        """The button saves the tracks that tracks_of(source's value) names, then shows where they went. Not an API
        endpoint of its own: clients have /save_playlist."""
        def on_save(name, value):
            return saved_playlist_status(save_tracks(library, name, tracks_of(value)))

        # Queued (not in the models' turn: saving needs none): Gradio shows an unqueued event's gr.Error as a bare
        # "Error" on its output, without the message.
        self.button.click(logged_as_one_line(on_save), inputs=[self.name, source], outputs=self.status,
                          api_visibility="private")


def add_save_playlist_api(library: LiveLibrary) -> None:
    """The /save_playlist endpoint, in the gr.Blocks being built."""
    def save_playlist_endpoint(name: str, tracks: list[str]) -> dict:
        """Save tracks of the library (ids or file paths as the library lists them, in order) as the playlist
        `name`: LIBRARY/playlists/NAME.m3u8 for files, replacing the playlist this app saved under that name,
        never a file of that name it did not save; a server's songs as the playlist `name` on their server.
        Answers {"name", "tracks", "saved": [{"to", "file" or "server", "tracks", "titles"}], "failed": [...]},
        a server named by its label ("Subsonic server 1", as the Library tab lists the sources), not its address."""
        return save_tracks(library, name, tracks)

    gr.api(logged_as_one_line(save_playlist_endpoint), api_name="save_playlist", queue=False)
