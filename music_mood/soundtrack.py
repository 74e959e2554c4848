"""A soundtrack for a set of photos: the plan (scenes, the track and the stretch of it under each scene, and why),
made once and rendered by music_mood.render into a playlist, a mixed audio file and a slideshow video."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

DEFAULT_SECONDS_PER_PHOTO = 4.0
MIN_PHOTOS, MAX_PHOTOS = 2, 200  # a soundtrack is for a set; the CLI and the API refuse more than MAX_PHOTOS
FADE_S = 0.5  # fade in at the start of the soundtrack, and the final fade out that ends with the last photo
CROSSFADE_S = 1.5  # between two pieces of music (two scenes, or a track continued by the next-best one)
PHOTO_CROSSFADE_S = 0.5  # between two photos in the video


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

    file_path: str  # relative to Plan.library_root, as in the database
    title: str
    artist: str
    score: float  # cosine of the track's vector to the scene's query
    track_start_s: float
    track_end_s: float
    start_s: float
    end_s: float


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
    tracks_repeat: bool = False  # the library had fewer usable tracks than the plan needed
    skipped_photos: list[dict] = field(default_factory=list)  # {"path", "error"}: photos that could not be read

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        scenes = [Scene(**{**s, "pieces": [Piece(**p) for p in s["pieces"]]}) for s in data["scenes"]]
        return cls(**{**data, "photos": [PlanPhoto(**p) for p in data["photos"]], "scenes": scenes})
