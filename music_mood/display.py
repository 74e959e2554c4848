"""How tracks and times read in a terminal and on the page: one duration format and one layout of a track's tags."""
from __future__ import annotations

from collections.abc import Iterator

# (key, width) of the tag columns every track table shows, in order.
TAG_COLUMNS = (("title", 30), ("artist", 18), ("mood", 10), ("genre", 11))


def format_duration(seconds: float | None) -> str:
    """Seconds as m:ss (rounded to the second); "" for None (no best moment known)."""
    if seconds is None:
        return ""
    minutes, seconds = divmod(round(float(seconds)), 60)
    return f"{minutes}:{seconds:02d}"


def format_bpm(bpm: float | None, unknown: str = "", unit: str = " BPM") -> str:
    """A tempo as "128.0 BPM" (`unit` after the number; "" in a table's bpm column); `unknown` for None (no beat
    found, or a track added before tempos were stored)."""
    return unknown if bpm is None else f"{float(bpm):.1f}{unit}"


def track_tags(track) -> list[str]:
    """A track's title, artist, mood and genre as text (a metadata record or a recommend.Track). A mood or genre
    of the user's own (folder, file tag) is shown as it is; without one, the best automatic tag, marked "(auto)"."""
    get = track.get if isinstance(track, dict) else lambda key, default="": getattr(track, key, default)
    values = []
    for key, _ in TAG_COLUMNS:
        value, auto = str(get(key, "") or ""), _auto_words(track, key)
        values.append(value or (f"{auto[0]} (auto)" if auto else ""))
    return values


def _auto_words(track, kind: str) -> list[str]:
    """The automatic tags of one kind, best first, of a metadata record ([tag, score] pairs), a recommend.Track or
    its dict (tags alone)."""
    tags = (track.get("auto_tags") if isinstance(track, dict) else getattr(track, "auto_tags", None)) or {}
    return [entry[0] if isinstance(entry, (list, tuple)) else entry for entry in tags.get(kind, [])]


def tag_columns(values: list[str]) -> str:
    """The tag columns of one table line, each cut to its width."""
    return " ".join(f"{value[:width]:<{width}}" for value, (_, width) in zip(values, TAG_COLUMNS))


def library_lines(tracks) -> Iterator[str]:
    """The library as a readable table, one track a line, made as it is printed (a catalogue's records are read
    in batches, never all at once); music_to_vector.py --list. The id is what --remove and --set-FIELD accept
    besides the file."""
    yield f"{'#':>4}  {tag_columns([key for key, _ in TAG_COLUMNS])} {'bpm':>5} {'length':>7}  {'id':<16}  file"
    for i, track in enumerate(tracks, 1):
        yield (f"{i:>4}  {tag_columns(track_tags(track))} {format_bpm(track.get('bpm'), unit=''):>5} "
               f"{format_duration(float(track.get('duration_s', 0) or 0)):>7}  {track.get('id', ''):<16}  "
               f"{track['file_path']}")


def format_library(tracks) -> str:
    """library_lines as one string."""
    return "\n".join(library_lines(tracks))


def format_recommendation(label: str, rec) -> str:
    """The readable result for one image (recommend.Recommendation): what it was read as, then the ranked tracks."""
    lines = [label] if label else []
    if rec.caption:
        lines.append(f"  caption: {rec.caption}")
    if rec.mood_words:
        lines.append(f"  mood:    {', '.join(rec.mood_words)}")
    lines.append(f"  query:   {rec.query_text}")
    lines.append(f"  {'#':>3}  {'score':>6}  {tag_columns([key for key, _ in TAG_COLUMNS])} {'bpm':>5} {'best at':>7}  "
                 f"file")
    for t in rec.results:
        lines.append(f"  {t.rank:>3}  {t.score:>6.3f}  {tag_columns(track_tags(t))} "
                     f"{format_bpm(getattr(t, 'bpm', None), unit=''):>5} {format_duration(t.best_segment_start_s):>7}  "
                     f"{t.file_path}")
        shared = getattr(t, "shared_mood_words", None)
        if shared:  # why the track is listed, in the photo's own words
            lines.append(f"  {'':>3}  {'':>6}  shares the mood words: {', '.join(shared)}")
    return "\n".join(lines)


def bar_and_beat(piece) -> str:
    """Where a beat-synced piece starts in its track, "bar 5.1" (bar 5, beat 1); "-" by the clock."""
    bar, beat = getattr(piece, "start_bar", None), getattr(piece, "start_beat", None)
    if isinstance(piece, dict):
        bar, beat = piece.get("start_bar"), piece.get("start_beat")
    return f"bar {bar}.{beat}" if bar is not None and beat is not None else "-"


def format_soundtrack(plan) -> str:
    """The readable soundtrack plan (soundtrack.Plan): each scene with its photos, then the music under it, where
    in each track it plays, and why it was picked."""
    photos = len(plan.photos)
    scenes = len(plan.scenes)
    heading = (f"Soundtrack: {photos} photos, {format_duration(plan.total_s)} ({plan.seconds_per_photo:g} s a photo), "
               f"{scenes} scene{'s' * (scenes != 1)}")
    lines = [heading]
    if plan.text:
        lines.append(f"  words for every photo: {plan.text}")
    for scene in plan.scenes:
        first, last = scene.photos[0] + 1, scene.photos[-1] + 1
        shown = f"photo {first}" if first == last else f"photos {first}-{last}"
        span = f"{format_duration(scene.start_s)}-{format_duration(scene.end_s)}"
        lines += ["", f"scene {scene.index + 1}  {span}  {shown}"]
        for i in scene.photos:
            photo = plan.photos[i]
            lines.append(f"  {i + 1:>3}  {photo.name}: {photo.caption}" +
                         (f" ({', '.join(photo.mood_words)})" if photo.mood_words else ""))
        lines.append(f"  {'':<8}{'in track':>11}  {'from':>9}  {'tempo':>9}  {'score':>6}  {'title':<30} "
                     f"{'artist':<18} file")
        for j, piece in enumerate(scene.pieces):
            span = f"{format_duration(piece.track_start_s)}-{format_duration(piece.track_end_s)}"
            lines.append(f"  {'music' if j == 0 else 'then':<8}{span:>11}  {bar_and_beat(piece):>9}  "
                         f"{format_bpm(piece.tempo_bpm, '-'):>9}  {piece.score:>6.3f}  {piece.title[:30]:<30} "
                         f"{piece.artist[:18]:<18} {piece.file_path}")
        why = f"  why:  {', '.join(scene.mood_words)} mood" if scene.mood_words else "  why:  the photos' captions"
        if scene.shared_mood_words:
            why += f"; the track is tagged {', '.join(scene.shared_mood_words)}"
        lines.append(why)
    if plan.tracks_repeat:
        lines += ["", "Note: the library has fewer usable tracks than this soundtrack needs, so some tracks repeat."]
    return "\n".join(lines)
