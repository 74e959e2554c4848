"""Ranking a library for a query vector: exact cosine search (or, for a large library, candidates from its faiss
index, index.py, re-scored exactly), the mood, genre and tempo filters, and each result's best moment."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from music_mood.database import EMPTY_LIBRARY, Database, EmptyLibraryError
from music_mood.remote import is_server_track
from music_mood.tags import auto_tag_words

# How many rows the index proposes for each wanted result; they are then re-scored exactly.
INDEX_CANDIDATES_PER_RESULT = 10
INDEX_MIN_CANDIDATES = 100
# A tempo filter of one number N keeps the tracks within this share of N: "120" is 114-126 BPM, about one step of
# a tempo estimate either way, and close enough to cut a slideshow to.
ABOUT_BPM = 0.05
BPM_RANGE_FORMS = "80-110, 80- (at least 80), -110 (at most 110) or 120 (about 120: within 5 %)"


class BpmRange(NamedTuple):
    """A tempo filter: the tracks whose bpm is from `low` to `high`, both included; None leaves that side open."""

    low: float | None
    high: float | None

    def __str__(self) -> str:
        if self.low is None or self.high is None:
            return f"at most {self.high:g} BPM" if self.low is None else f"at least {self.low:g} BPM"
        return f"{self.low:g}-{self.high:g} BPM"


def parse_bpm_range(text: str) -> BpmRange:
    """A tempo filter as a user types it: "80-110", "80-" (at least), "-110" (at most) or "120" (about 120: within
    ABOUT_BPM either way). Raises ValueError with a message naming what was wrong and the forms it takes."""
    text = str(text).strip()
    low_text, dash, high_text = text.replace("\u2013", "-").partition("-")  # an en dash (80–110) is a dash too

    def number(part: str) -> float | None:
        if not part.strip() and dash:
            return None
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{text!r} is not a tempo range: give {BPM_RANGE_FORMS}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{text!r} is not a tempo range: a tempo is a number of beats per minute, 0 or more")
        return value

    low, high = number(low_text), number(high_text) if dash else None
    if not dash:
        return BpmRange(low * (1 - ABOUT_BPM), low * (1 + ABOUT_BPM))
    if low is None and high is None:
        raise ValueError(f"{text!r} is not a tempo range: give {BPM_RANGE_FORMS}")
    if low is not None and high is not None and low > high:
        raise ValueError(f"{text!r} is not a tempo range: {low:g} is above {high:g}")
    return BpmRange(low, high)


def _filter_words(values) -> tuple[str, ...]:
    """Mood or genre filter values (one text, a list, or None) as the tags compare them: stripped, lower-cased,
    without blanks or repeats, sorted."""
    if values is None:
        return ()
    values = [values] if isinstance(values, str) else list(values)
    return tuple(sorted({str(v).strip().lower() for v in values if str(v).strip()}))


def _tempo_range(bpm) -> BpmRange | None:
    """A tempo filter given as a BpmRange, a (low, high) pair or text (parse_bpm_range); None or "" is none."""
    if bpm is None or (isinstance(bpm, str) and not bpm.strip()):
        return None
    return parse_bpm_range(bpm) if isinstance(bpm, str) else BpmRange(*bpm)


@dataclass(frozen=True)
class Filters:
    """Which tracks a search may return: one of `moods` (a track's own mood tag or one of its automatic ones), one
    of `genres` (likewise), and a tempo in `bpm` (a track without one never is). An empty side keeps every track.

    Given as users give them (a text or a list of words; a BpmRange, a (low, high) pair or text such as "80-110"),
    they are kept in one form, so equal filters compare equal and a plan can store them: moods and genres as
    sorted lower-case tuples, bpm as a BpmRange or None. A tempo text that does not parse raises ValueError here.
    """

    moods: tuple[str, ...] = ()
    genres: tuple[str, ...] = ()
    bpm: BpmRange | None = None

    def __post_init__(self):
        object.__setattr__(self, "moods", _filter_words(self.moods))
        object.__setattr__(self, "genres", _filter_words(self.genres))
        object.__setattr__(self, "bpm", _tempo_range(self.bpm))

    def to_dict(self) -> dict:
        """{"moods": [...], "genres": [...], "bpm": [low, high] or None}: JSON as a plan stores it; Filters(**it)
        reads it back."""
        return {"moods": list(self.moods), "genres": list(self.genres),
                "bpm": None if self.bpm is None else list(self.bpm)}

    def mask(self, db: Database) -> np.ndarray | None:
        """Boolean (N,) mask of the tracks of `db` these filters keep, or None when there is no filter."""
        allowed = None
        if self.bpm is not None:
            values = db.bpm_values()
            allowed = ~np.isnan(values)
            if self.bpm.low is not None:
                allowed &= values >= self.bpm.low
            if self.bpm.high is not None:
                allowed &= values <= self.bpm.high
        for key, wanted in (("mood", self.moods), ("genre", self.genres)):
            if wanted:
                mask = np.zeros(len(db), dtype=bool)
                mask[db.rows_tagged(key, set(wanted))] = True
                allowed = mask if allowed is None else allowed & mask
        return allowed

    def check(self, db: Database) -> None:
        """Raise EmptyLibraryError when `db` has no track, or none these filters keep (naming the moods/genres and
        the tempos it has).

        Needs no model: callers (recommend, a soundtrack's plan, the CLI before loading any) run it first, so a
        mistyped filter fails at once.
        """
        if len(db) == 0:
            raise EmptyLibraryError(EMPTY_LIBRARY)
        allowed = self.mask(db)
        if allowed is None or allowed.any():
            return
        asked, offered = [], []
        for key, wanted in (("mood", self.moods), ("genre", self.genres)):
            if wanted:
                existing = tag_values(db, key)
                asked.append(f"the {key} {' or '.join(wanted)}")
                offered.append(f"the {key}s it has: {', '.join(existing) or 'none'}")
        if self.bpm is not None:
            values = db.bpm_values()[~np.isnan(db.bpm_values())]
            asked.append(f"a tempo of {self.bpm}")
            offered.append(f"the tempos it has: {values.min():g}-{values.max():g} BPM" if len(values) else
                           "no track has a tempo")
            untimed = sum(v is _ABSENT for v in db.column("bpm", _ABSENT))
            if untimed:
                offered[-1] += (f" ({untimed} tracks added before tempos were stored have none yet: run python "
                                f"music_to_vector.py to read them)")
        raise EmptyLibraryError(f"no track in the library has {' and '.join(asked)}; {'; '.join(offered)}")


NO_FILTERS = Filters()


def tag_values(db: Database, key: str) -> list[str]:
    """The distinct non-empty values of one tag (mood, genre) in the library, its tracks' own and automatic,
    sorted case-insensitively."""
    return db.tag_values(key)


def _exact_top(vectors: np.ndarray, vector: np.ndarray, topk: int, candidates: np.ndarray | None = None):
    """The top k of `candidates` (default: every row) by dot product, best first, ties broken by row order."""
    if candidates is None:
        scores_all = vectors @ vector
        candidates, scores = np.arange(len(scores_all)), scores_all
    else:
        candidates = np.sort(candidates)
        scores = vectors[candidates] @ vector
    k = min(topk, len(candidates))
    if k < len(candidates):
        # Keep every row tied with the k-th score, so the tie-break below, not argpartition, picks among them.
        kth = np.partition(-scores, k - 1)[k - 1]
        keep = -scores <= kth
        candidates, scores = candidates[keep], scores[keep]
    order = np.lexsort((candidates, -scores))[:k]
    return [(int(candidates[i]), float(scores[i])) for i in order]


def rank_tracks(db: Database, vector: np.ndarray, topk: int,
                filters: Filters = NO_FILTERS) -> list[tuple[int, float]]:
    """Cosine ranking: (row, score) for the top k rows, best first, ties broken by row order.

    `vector` is a unit float32 (D,); the database rows are unit-length, so the dot product is the cosine. Only
    the rows `filters` keep are ranked.
    Small libraries (and filters that leave fewer than db.index_min_tracks rows) are ranked exactly. Larger
    ones ask the faiss index (db.search_index()) for candidates, oversampled by how much the filters remove,
    and re-score those exactly; if the filters leave fewer than k of them, the exact ranking is used instead.
    """
    vector = np.asarray(vector, dtype=np.float32)
    allowed = filters.mask(db)
    kept = len(db) if allowed is None else int(allowed.sum())
    if kept == 0:
        return []
    index = db.search_index() if kept >= db.index_min_tracks else None
    if index is not None:
        wanted = max(INDEX_MIN_CANDIDATES, INDEX_CANDIDATES_PER_RESULT * topk)
        wanted = min(len(db), math.ceil(wanted * len(db) / kept))
        _, rows = index.search(vector[None, :], wanted)
        rows = rows[0][rows[0] >= 0]
        if allowed is not None:
            rows = rows[allowed[rows]]
        if len(rows) >= min(topk, kept):
            return _exact_top(db.vectors, vector, topk, rows)
    return _exact_top(db.vectors, vector, topk, None if allowed is None else np.flatnonzero(allowed))


def rank_present_tracks(db: Database, vector: np.ndarray, topk: int,
                        filters: Filters = NO_FILTERS) -> tuple[list[tuple[int, float]], list[int]]:
    """rank_tracks without the tracks whose file is missing: ((row, score) for the top k, rows skipped), best first.

    Only the files of ranked candidates are looked at (one stat each), in rank order until k are found; when
    some are missing, rank_tracks is asked for twice as many and the next ones are looked at. A server's song
    (remote.is_server_track) has no file here and counts as present: asking its server for every candidate would
    make a search wait on the network, and a song gone from it is dropped by the next build.
    """
    present: dict[int, bool] = {}
    want = topk
    while True:
        ranked = rank_tracks(db, vector, want, filters)
        kept, skipped = [], []
        for row, score in ranked:
            if row not in present:
                track = db.tracks[row]
                present[row] = is_server_track(track) or os.path.isfile(db.root / track["file_path"])
            (kept if present[row] else skipped).append((row, score))
            if len(kept) == topk:
                return kept, [row for row, _ in skipped]
        if len(ranked) < want:  # every allowed track was ranked: fewer than k are there
            return kept, [row for row, _ in skipped]
        want *= 2


def missing_files_error(db: Database, missing: list[int]) -> EmptyLibraryError:
    """The error for a search whose every matching track has lost its file (`missing`: their rows, best first): how
    many, the first one's path, and what to run."""
    return EmptyLibraryError(f"every matching track's file is missing ({len(missing)} files, e.g. "
                             f"{db.root / db.tracks[missing[0]]['file_path']}); run python music_to_vector.py to "
                             f"update the library")


def best_segment_start(db: Database, row: int, vector: np.ndarray) -> float | None:
    """Start (seconds) of the track's window closest to the query; None for a database without segments.

    Window j starts at j * db.window_s, except the last, which ends at the track's end and starts at the record's
    last_window_start_s. A record without it comes from an older build whose last window was zero-padded: that
    window is left out (unless it is the only one), so the best moment never starts less than a window before
    the end, where there would be only a few seconds of music to hear.
    """
    track = db.tracks[row]
    count = int(track.get("segment_count", 0))
    if db.segments is None or count == 0:
        return None
    last_start = track.get("last_window_start_s")
    if last_start is None and count > 1:
        count -= 1
    offset = int(track["segment_offset"])
    best = int(np.argmax(db.segments[offset:offset + count] @ vector))
    if last_start is not None and best == count - 1:
        return float(last_start)
    return best * db.window_s


# The default cap on tracks by one artist (and from one album) in one result list: enough to show that an artist
# fits, few enough that a top 10 shows at least four of them. 0 turns the cap off.
DEFAULT_MAX_PER_ARTIST = 3
# MMR re-ranks this many of the best tracks per wanted result (at least MMR_MIN_POOL): a track further down than
# that is too far from the query for diversity to be worth playing it.
MMR_POOL_PER_RESULT = 5
MMR_MIN_POOL = 50
_ABSENT = object()  # a record without the key asked for (a bpm of None means: read, no beat)


def group_keys(track: dict) -> list[tuple[str, str]]:
    """The groups a track counts against under the per-artist cap: ("artist", name) and ("album", artist/album),
    case-insensitive. A track without an artist is in no group: an empty artist is no artist, and an album title
    alone ("Greatest Hits") does not say which album it is."""
    artist = str(track.get("artist", "") or "").strip().lower()
    album = str(track.get("album", "") or "").strip().lower()
    if not artist:
        return []
    return [("artist", artist)] + ([("album", f"{artist}/{album}")] if album else [])


def _fits_cap(keys: list[tuple[str, str]], counts: dict, max_per_artist: int) -> bool:
    return max_per_artist <= 0 or all(counts.get(key, 0) < max_per_artist for key in keys)


def select_results(db: Database, vectors: np.ndarray, ranked: list[tuple[int, float]], topk: int,
                   max_per_artist: int = DEFAULT_MAX_PER_ARTIST,
                   diversity: float = 0.0) -> list[tuple[int, float]]:
    """Pick up to k of `ranked` ((row, score) best first): the per-artist/album cap, then MMR when diversity > 0.

    MMR takes, one at a time, the candidate with the highest (1 - diversity) * score - diversity * (its highest
    cosine to a track already taken), over the rows' stored vectors (unit float32 (N, D)); ties go to the better
    ranked. diversity 0 is the pure ranking, 1 picks for difference alone after the best track. Candidates that
    would break the cap are passed over. The returned scores stay the tracks' cosines to the query.
    """
    counts: dict = {}
    chosen: list[tuple[int, float]] = []

    def take(row: int, score: float) -> None:
        chosen.append((row, score))
        for key in group_keys(db.tracks[row]):
            counts[key] = counts.get(key, 0) + 1

    if diversity <= 0:
        for row, score in ranked:
            if len(chosen) == topk:
                break
            if _fits_cap(group_keys(db.tracks[row]), counts, max_per_artist):
                take(row, score)
        return chosen
    rows = np.array([row for row, _ in ranked], dtype=np.int64)
    scores = np.array([score for _, score in ranked], dtype=np.float64)
    pool = np.asarray(vectors[rows], dtype=np.float64)
    closest = np.full(len(rows), -np.inf)  # each candidate's highest cosine to a chosen track
    open_ = np.ones(len(rows), dtype=bool)
    while len(chosen) < topk and open_.any():
        gain = (1 - diversity) * scores - diversity * np.where(np.isfinite(closest), closest, 0.0)
        gain[~open_] = -np.inf
        best = int(np.argmax(gain))  # argmax returns the first of equals: the better ranked
        open_[best] = False
        row = int(rows[best])
        if not _fits_cap(group_keys(db.tracks[row]), counts, max_per_artist):
            continue
        take(row, float(scores[best]))
        closest = np.maximum(closest, pool @ pool[best])
    return chosen


def rank_results(db: Database, vector: np.ndarray, topk: int, filters: Filters = NO_FILTERS,
                 max_per_artist: int = DEFAULT_MAX_PER_ARTIST, diversity: float = 0.0,
                 exclude: set[int] | frozenset[int] = frozenset()) -> tuple[list[tuple[int, float]], list[int]]:
    """The result list for a query: ((row, score) for up to k tracks, rows skipped for a missing file).

    rank_present_tracks' ranking (filters applied, missing files skipped), without the rows in `exclude` (the
    "more like this" track itself), then select_results' per-artist cap (0 = none) and MMR diversity in [0, 1]
    (0 = off). The cap and the exclusions may pass over ranked tracks, so more are ranked until k are kept or
    every allowed track has been looked at; MMR re-ranks the best max(MMR_MIN_POOL, MMR_POOL_PER_RESULT * k).
    """
    if max_per_artist < 0:
        raise ValueError("max_per_artist must be 0 (no cap) or more")
    if not 0 <= diversity <= 1:
        raise ValueError("diversity must be between 0 and 1")
    want = topk + len(exclude)
    if diversity > 0:
        want = max(want, MMR_MIN_POOL, MMR_POOL_PER_RESULT * topk)
    while True:
        ranked, missing = rank_present_tracks(db, vector, want, filters)
        candidates = [(row, score) for row, score in ranked if row not in exclude]
        chosen = select_results(db, db.vectors, candidates, topk, max_per_artist, diversity)
        if len(chosen) == topk or len(ranked) < want:
            return chosen, missing
        want *= 2


def track_tag_words(track: dict) -> set[str]:
    """A track's mood and genre tags, its own and automatic, as lower-case words: "calm, Jazz" gives
    {"calm", "jazz"}."""
    words = {word.lower() for key in ("mood", "genre") for word in auto_tag_words(track, key)}
    for key in ("mood", "genre"):
        for tag in str(track.get(key, "") or "").replace(";", ",").replace("/", ",").split(","):
            if tag.strip():
                words.add(tag.strip().lower())
    return words


def shared_mood_words(track: dict, mood_words: list[str]) -> list[str]:
    """The photo's mood words (in their order) that are among the track's mood/genre tags: why it was chosen."""
    tags = track_tag_words(track)
    return [word for word in mood_words if word.strip().lower() in tags]
