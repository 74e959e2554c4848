"""The one recommend() that the CLI and the web app share, and the command line around it."""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from image_to_vector import ImageError
from models import HelpFormatter, ModelLoadError, add_model_arguments, int_argument
from music_to_vector import Database, DatabaseError, LibraryPaths, add_library_arguments, load_database

EMPTY_LIBRARY = ("the music library is empty: put audio files in new_music/ and run python music_to_vector.py, "
                 "or import the bundled tracks with python music_to_vector.py --sample")


class EmptyLibraryError(DatabaseError):
    """There is nothing to recommend from (no tracks, or none left after the filters)."""


@dataclass
class Track:
    """One ranked result; best_segment_start_s is where in the track the query matches best."""

    rank: int
    title: str
    artist: str
    mood: str
    genre: str
    file_path: str
    score: float
    best_segment_start_s: float | None


@dataclass
class Recommendation:
    """Everything a user sees: what the photo was read as, the exact text embedded, and the ranked tracks.

    skipped_missing: file_path of each track that ranked among these results but whose file is gone, best first.
    """

    caption: str
    mood_words: list[str]
    query_text: str
    results: list[Track] = field(default_factory=list)
    skipped_missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _normalise_filter(values) -> set[str] | None:
    if values is None or values == "":
        return None
    values = [values] if isinstance(values, str) else list(values)
    values = {str(v).strip().lower() for v in values if str(v).strip()}
    return values or None


def _allowed_rows(db: Database, moods=None, genres=None) -> np.ndarray | None:
    """Boolean (N,) mask of the tracks the mood/genre filters keep, or None when there is no filter."""
    allowed = None
    for key, wanted in (("mood", _normalise_filter(moods)), ("genre", _normalise_filter(genres))):
        if wanted is not None:
            codes_of, codes = db.tag_codes(key)
            mask = np.isin(codes, [codes_of[w] for w in wanted if w in codes_of])
            allowed = mask if allowed is None else allowed & mask
    return allowed


def check_filters(db: Database, moods=None, genres=None) -> None:
    """Raise EmptyLibraryError when the mood/genre filters keep no track of `db`, naming the moods/genres it has.

    Needs no model: callers run it before loading or asking one, so a mistyped filter fails at once.
    """
    allowed = _allowed_rows(db, moods, genres)
    if allowed is None or allowed.any():
        return
    asked, offered = [], []
    for key, wanted in (("mood", _normalise_filter(moods)), ("genre", _normalise_filter(genres))):
        if wanted is not None:
            existing = sorted({str(t.get(key, "")).strip() for t in db.tracks} - {""}, key=str.lower)
            asked.append(f"the {key} {' or '.join(sorted(wanted))}")
            offered.append(f"the {key}s it has: {', '.join(existing) or 'none'}")
    raise EmptyLibraryError(f"no track in the library has {' and '.join(asked)}; {'; '.join(offered)}")


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


# How many rows the index proposes for each wanted result; they are then re-scored exactly.
INDEX_CANDIDATES_PER_RESULT = 10
INDEX_MIN_CANDIDATES = 100


def rank_tracks(db: Database, vector: np.ndarray, topk: int, moods=None, genres=None) -> list[tuple[int, float]]:
    """Cosine ranking: (row, score) for the top k rows, best first, ties broken by row order.

    `vector` is a unit float32 (D,); the database rows are unit-length, so the dot product is the cosine.
    Small libraries (and filters that leave fewer than SEARCH_INDEX_MIN_TRACKS rows) are ranked exactly. Larger
    ones ask the faiss index (db.search_index()) for candidates, oversampled by how much the filters remove,
    and re-score those exactly; if the filters leave fewer than k of them, the exact ranking is used instead.
    """
    from music_to_vector import SEARCH_INDEX_MIN_TRACKS

    vector = np.asarray(vector, dtype=np.float32)
    allowed = _allowed_rows(db, moods, genres)
    kept = len(db) if allowed is None else int(allowed.sum())
    if kept == 0:
        return []
    index = db.search_index() if kept >= SEARCH_INDEX_MIN_TRACKS else None
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


def rank_present_tracks(db: Database, vector: np.ndarray, topk: int, moods=None,
                        genres=None) -> tuple[list[tuple[int, float]], list[int]]:
    """rank_tracks without the tracks whose file is missing: ((row, score) for the top k, rows skipped), best first.

    Only the files of ranked candidates are looked at (one stat each), in rank order until k are found; when
    some are missing, rank_tracks is asked for twice as many and the next ones are looked at.
    """
    present: dict[int, bool] = {}
    want = topk
    while True:
        ranked = rank_tracks(db, vector, want, moods, genres)
        kept, skipped = [], []
        for row, score in ranked:
            if row not in present:
                present[row] = os.path.isfile(db.root / db.tracks[row]["file_path"])
            (kept if present[row] else skipped).append((row, score))
            if len(kept) == topk:
                return kept, [row for row, _ in skipped]
        if len(ranked) < want:  # every allowed track was ranked: fewer than k are there
            return kept, [row for row, _ in skipped]
        want *= 2


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


def recommend(blip, clap, db: Database, image=None, text: str = "", topk: int = 10, moods=None, genres=None) -> Recommendation:
    """Recommend tracks of `db` for an image and/or a text.

    `blip` and `clap` are models from models.load_blip / load_clap_text (blip may be None for text alone);
    `image` is a path, bytes, numpy array or PIL image; `moods`/`genres` keep only tracks with those tags.
    Tracks whose file is missing are left out (the next ones take their places) and named in skipped_missing.
    Raises ImageError for an unreadable image and EmptyLibraryError when nothing can be recommended (an empty
    library, filters that keep no track, checked before any model work, or every matching file missing).
    """
    from image_to_vector import image_to_query

    if topk < 1:
        raise ValueError("topk must be at least 1")
    if len(db) == 0:
        raise EmptyLibraryError(EMPTY_LIBRARY)
    check_filters(db, moods, genres)
    query = image_to_query(blip, clap, image=image, text=text)
    if query.vector.shape[0] != db.dim:
        raise DatabaseError(f"the database holds {db.dim}-d vectors but the CLAP model gives "
                            f"{query.vector.shape[0]}-d; rebuild it with: python music_to_vector.py --rebuild")
    ranked, missing = rank_present_tracks(db, query.vector, topk, moods, genres)
    if not ranked:
        raise EmptyLibraryError(f"every matching track's file is missing ({len(missing)} files, e.g. "
                                f"{db.root / db.tracks[missing[0]]['file_path']}); run python music_to_vector.py "
                                f"to update the library")
    results = []
    for rank, (row, score) in enumerate(ranked, 1):
        t = db.tracks[row]
        results.append(Track(rank=rank, title=str(t.get("title", "")), artist=str(t.get("artist", "")),
                             mood=str(t.get("mood", "")), genre=str(t.get("genre", "")),
                             file_path=str(t["file_path"]), score=round(score, 6),
                             best_segment_start_s=best_segment_start(db, row, query.vector)))
    return Recommendation(caption=query.caption, mood_words=query.mood_words, query_text=query.query_text,
                          results=results, skipped_missing=[str(db.tracks[row]["file_path"]) for row in missing])


# ---------------------------------------------------------------------------------------------- playing


def player_command(path: str, start_s: float | None) -> list[str] | None:
    """A command that plays `path` from `start_s` with a player found on this machine, or None."""
    start = f"{start_s or 0:.1f}"
    if shutil.which("mpv"):
        return ["mpv", "--no-video", f"--start={start}", path]
    if shutil.which("ffplay"):
        return ["ffplay", "-nodisp", "-autoexit", "-loglevel", "error", "-ss", start, path]
    if shutil.which("cvlc"):
        return ["cvlc", "--play-and-exit", f"--start-time={start}", path]
    if sys.platform == "darwin" and shutil.which("afplay"):
        return ["afplay", path]  # afplay cannot seek; it plays from the start
    return None


def play(path: str, start_s: float | None) -> None:
    """Play a track in the foreground; raises RuntimeError saying why it cannot."""
    if not os.path.exists(path):
        raise RuntimeError(f"cannot play {path}: the file is not there")
    command = player_command(path, start_s)
    if command is None and sys.platform == "win32":
        os.startfile(path)  # the default player; it cannot be told where to start
        return
    if command is None:
        raise RuntimeError("cannot play: no audio player found (install mpv or ffmpeg, which has ffplay)")
    result = subprocess.run(command, check=False, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:  # no audio device, say, or a file the player cannot decode
        detail = (result.stderr or "").strip().splitlines()
        raise RuntimeError(f"cannot play {path}: {command[0]} failed (exit {result.returncode})"
                           + (f": {detail[-1]}" if detail else ""))


# ---------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recommend.py",
        description="Recommend music from your library that fits the mood of a photo (and/or a text).",
        formatter_class=HelpFormatter,
        epilog="example: python recommend.py beach.jpg --topk 5 --text 'sunset, slow' --play",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="photos to find music for")
    parser.add_argument("--text", default="", help="words to search by, alone or together with the photo")
    parser.add_argument("--topk", type=int_argument(1), default=10, help="how many tracks to list")
    parser.add_argument("--mood", action="append", help="only tracks of this mood (repeat for several)")
    parser.add_argument("--genre", action="append", help="only tracks of this genre (repeat for several)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image, one per line")
    parser.add_argument("--play", action="store_true", help="play the top track from its best moment")
    add_library_arguments(parser)
    add_model_arguments(parser)
    return parser


def format_table(label: str, rec: Recommendation) -> str:
    """The readable result for one image: what it was read as, then the ranked tracks."""
    lines = [label] if label else []
    if rec.caption:
        lines.append(f"  caption: {rec.caption}")
    if rec.mood_words:
        lines.append(f"  mood:    {', '.join(rec.mood_words)}")
    lines.append(f"  query:   {rec.query_text}")
    lines.append(f"  {'#':>3}  {'score':>6}  {'title':<30} {'artist':<18} {'mood':<10} {'genre':<11} {'best at':>7}  file")
    for t in rec.results:
        best = "" if t.best_segment_start_s is None else "{}:{:02d}".format(*divmod(int(t.best_segment_start_s), 60))
        lines.append(f"  {t.rank:>3}  {t.score:>6.3f}  {t.title[:30]:<30} {t.artist[:18]:<18} {t.mood[:10]:<10} "
                     f"{t.genre[:11]:<11} {best:>7}  {t.file_path}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.images and not args.text.strip():
        parser.error("give at least one IMAGE or --text")
    paths = LibraryPaths.at(args.library, args.vectors, args.meta)
    status = 0
    try:
        from models import load_blip, load_clap_text

        db = load_database(paths, clap_model=args.clap_model)
        if len(db) == 0:
            raise EmptyLibraryError(EMPTY_LIBRARY)
        check_filters(db, args.mood, args.genre)  # before the models: loading them takes seconds
        clap = load_clap_text(args.clap_model, args.precision)
        blip = load_blip(args.blip_model, args.precision) if args.images else None
        first, warned = None, set()
        for image in args.images or [None]:
            try:
                rec = recommend(blip, clap, db, image=image, text=args.text, topk=args.topk,
                                moods=args.mood, genres=args.genre)
            except ImageError as e:
                print(f"Error: {e}", file=sys.stderr)
                status = 1
                continue
            first = first or rec
            for path in rec.skipped_missing:
                if path not in warned:
                    warned.add(path)
                    print(f"Warning: {db.root / path} is in the library but its file is missing; skipped "
                          f"(run python music_to_vector.py to update the library)", file=sys.stderr)
            if args.json:
                print(json.dumps({"image": image, **rec.to_dict()}, ensure_ascii=False), flush=True)
            else:
                print(format_table(image or "", rec) + "\n", flush=True)
        if args.play and first is not None:
            top = first.results[0]
            play(str(db.root / top.file_path), top.best_segment_start_s)
    except (DatabaseError, ModelLoadError, RuntimeError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    raise SystemExit(main())
