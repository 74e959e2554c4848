"""The soundtrack plan as data: the photos in order with when each is on screen, the scenes, and the stretch of a
library track under each (and why); its length limits; JSON in and out. soundtrack.py makes a plan, render.py
writes its files."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from music_mood.loudness import DEFAULT_LOUDNESS_LUFS
from music_mood.search import NO_FILTERS, Filters

DEFAULT_SECONDS_PER_PHOTO = 4.0
# The longest soundtrack made, and the longest a photo is shown: every edge (the CLI's flags, the page's slider, the
# /soundtrack API) takes these. Rendering holds the whole mix in memory (stereo float32 at 44.1 kHz: 0.35 MB a
# second, and the decoded stretches as much again, about 1.3 GB for 30 minutes) and encodes its video at a few
# times real time; 30 minutes is MAX_PHOTOS photos at 9 s each. A photo shown longer than a minute is a still.
MAX_SECONDS_PER_PHOTO = 60.0
MAX_TOTAL_S = 30 * 60.0
MIN_PHOTOS, MAX_PHOTOS = 2, 200  # a soundtrack is for a set; the CLI and the API refuse more than MAX_PHOTOS
FADE_S = 0.5  # fade in at the start of the soundtrack, and the final fade out that ends with the last photo
CROSSFADE_S = 1.5  # between two pieces of music (two scenes, or a track continued by the next-best one)
PHOTO_CROSSFADE_S = 0.5  # between two photos in the video
# What music_mood.render.write_outputs makes, by the output file's extension: the slideshow video, the mixed
# soundtrack (AAC or uncompressed), the playlist with start offsets, the plan itself, an editor's timeline
# (OpenTimelineIO, Final Cut Pro 7 XML, CMX 3600 EDL: timeline.py).
OUTPUT_EXTENSIONS = (".mp4", ".m4a", ".wav", ".m3u8", ".m3u", ".json", ".otio", ".xml", ".edl")  # render.OUTPUT_KINDS


@dataclass
class PlanPhoto:
    """One photo of the set, in the order shown: what it was read as, and when it is on screen (seconds into the
    soundtrack, end exclusive)."""

    path: str  # as given (a file path); render opens it again
    name: str  # the file name shown to the user
    caption: str
    mood_words: list[str]
    start_s: float
    end_s: float


@dataclass
class Piece:
    """A stretch of one library track under (part of) a scene: it plays [track_start_s, track_end_s) of the track
    from start_s to end_s of the soundtrack (end_s - start_s == track_end_s - track_start_s). Pieces abut: one's
    end_s is the next one's start_s. A cross-fade is centred on that boundary: rendering reads up to
    crossfade_s / 2 more of each track on its side (before track_start_s, after track_end_s), as far as the track
    has it, and shortens the fade on a side that has less."""

    file_path: str  # relative to Plan.library_root, as in the database (a server's song: see source)
    title: str
    artist: str
    score: float  # cosine of the track's vector to the scene's query
    track_start_s: float
    track_end_s: float
    start_s: float
    end_s: float
    # A song of a Subsonic server (remote.py): its server's address (the track's "source") and song id, which
    # rendering downloads it by, and its track's id in the library, which a served plan names it by (its file_path,
    # remote.server_file_path, holds the server's address); "" for a file.
    source: str = ""
    song_id: str = ""
    track_id: str = ""
    # Beat sync (issue 24): the track's tempo (its record's bpm; None: no steady beat), the beats and downbeats of
    # the stretch that plays, in soundtrack time (empty for a plan cut by the clock), and the cross-fade centred on
    # this piece's start (whole beats; None: the plan's crossfade_s).
    tempo_bpm: float | None = None
    beats_s: list[float] = field(default_factory=list)
    downbeats_s: list[float] = field(default_factory=list)
    crossfade_s: float | None = None
    start_bar: int | None = None  # where the stretch starts in its track, as bar and beat (1-based; beat sync)
    start_beat: int | None = None

    @property
    def on_server(self) -> bool:
        return bool(self.song_id)


@dataclass
class Scene:
    """Consecutive photos whose queries belong together, and the music under them."""

    index: int
    photos: list[int]  # indices into Plan.photos
    start_s: float
    end_s: float
    mood_words: list[str]  # the mood words most of the scene's photos share, best first: why this music
    query_text: str  # what the scene's query stands for, for the user (its photos' query texts joined)
    vector: list[float]  # the scene's query: its photos' unit query vectors averaged and normalised
    pieces: list[Piece] = field(default_factory=list)
    shared_mood_words: list[str] = field(default_factory=list)  # of mood_words, those the first track is tagged with


@dataclass
class Plan:
    """Everything a soundtrack is: JSON-serialisable (to_dict / from_dict), and all that render needs."""

    library_root: str
    seconds_per_photo: float
    total_s: float  # == len(photos) * seconds_per_photo: the soundtrack ends exactly with the last photo
    text: str  # the words given for the whole set
    photos: list[PlanPhoto]
    scenes: list[Scene]
    fade_s: float = FADE_S
    crossfade_s: float = CROSSFADE_S
    photo_crossfade_s: float = PHOTO_CROSSFADE_S
    loudness_lufs: float = DEFAULT_LOUDNESS_LUFS  # the soundtrack's integrated loudness (BS.1770), rendered ±1 LU
    tracks_repeat: bool = False  # the library had fewer usable tracks than the plan needed
    beat_sync: bool = False  # photos change on the beat and music on the bar (issue 24); False: by the clock
    fade_out_s: float | None = None  # the final fade's length (beat sync: the last bar); None: fade_s
    skipped_photos: list[dict] = field(default_factory=list)  # {"path", "error"}: photos that could not be read
    # The filters the plan was made with, which a scene's next-best keeps to (a plan stored without: none).
    filters: Filters = NO_FILTERS

    def to_dict(self) -> dict:
        return {**asdict(self), "filters": self.filters.to_dict()}

    def to_served_dict(self) -> dict:
        """to_dict as a server hands the plan to a visitor, naming no path of the server: no library_root (a
        piece's file_path is relative to the library already), each photo by its file name alone (its path is an
        upload's temporary copy), each skipped photo as {"name", "error"}, its name in the error too; a server
        song's piece without its server's address or user (the page plays it through this server): no "source",
        and its track's id for file_path (remote.page_file_path), which the page's requests may send back."""
        data = self.to_dict()
        del data["library_root"]
        for piece in (piece for scene in data["scenes"] for piece in scene["pieces"]):
            if piece["song_id"]:
                piece["source"], piece["file_path"] = "", piece["track_id"]
        for photo in data["photos"]:
            del photo["path"]
        data["skipped_photos"] = [named_skipped_photo(skipped) for skipped in self.skipped_photos]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        scenes = [Scene(**{**s, "pieces": [Piece(**p) for p in s["pieces"]]}) for s in data["scenes"]]
        return cls(**{**data, "photos": [PlanPhoto(**p) for p in data["photos"]], "scenes": scenes,
                      "filters": Filters(**data.get("filters") or {})})


def named_skipped_photo(skipped: dict) -> dict:
    """A photo Plan.skipped_photos holds ({"path", "error"}) as {"name", "error"}: named by its file name, in its
    error message too (an upload's path on the server means nothing to the user)."""
    name = Path(skipped["path"]).name
    return {"name": name, "error": skipped["error"].replace(skipped["path"], name)}


class NoReadablePhotosError(ValueError):
    """None of the photos given for a soundtrack could be read; the message names the first and why."""


def check_lengths(count: int, seconds_per_photo: float = DEFAULT_SECONDS_PER_PHOTO,
                  total_s: float | None = None) -> None:
    """Raise ValueError unless `count` photos is a set (MIN_PHOTOS to MAX_PHOTOS) and the lengths are positive and
    within the limits: seconds_per_photo at most MAX_SECONDS_PER_PHOTO, the soundtrack (total_s, or count photos
    of seconds_per_photo) at most MAX_TOTAL_S."""
    if not MIN_PHOTOS <= count <= MAX_PHOTOS:
        raise ValueError(f"a soundtrack is for {MIN_PHOTOS} to {MAX_PHOTOS} photos, not {count}")
    for name, value, limit in (("seconds per photo", seconds_per_photo, MAX_SECONDS_PER_PHOTO),
                               ("the total length", total_s, MAX_TOTAL_S)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if value is not None and value > limit:
            raise ValueError(f"{name} may be at most {limit:g}, not {value:g}")
    if total_s is None and count * seconds_per_photo > MAX_TOTAL_S:
        raise ValueError(f"{count} photos of {seconds_per_photo:g} s would last {count * seconds_per_photo:g} s; a "
                         f"soundtrack lasts at most {MAX_TOTAL_S:g} s ({MAX_TOTAL_S / 60:g} minutes)")
