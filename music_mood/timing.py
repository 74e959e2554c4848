"""Cutting a soundtrack on the beat (issue 24 §1): each photo changes on a beat of the music playing then, the photo
after a scene change on a downbeat, and the music changes on a bar line.

For each scene, in order, from the bar line where the last one ended (0 for the first):
- its track (pieces.TrackChooser, as by the clock) plays from its last downbeat at or before its best moment;
- the scene ends on the downbeat nearest the time the clock gives its end (photo lengths × photos so far), so the
  soundtrack never drifts by more than half a bar from the clock; where the track ends first, it stops at its
  last bar line and the next-best track goes on from its own downbeat;
- each photo inside the scene starts on the strong beat (the bar's one or three) nearest the time the clock gives
  it: photo lengths are whole numbers of beats close to the length asked for, and a listener (or another tracker)
  who hears the music at half or double our tempo still hears the change on a beat;
- the last scene ends on the beat nearest the length asked for (within half a beat), or on the track's own
  ending where that falls within ENDING_BEATS of it; otherwise the music fades out over its last bar;
- a cross-fade between two pieces is whole beats of the outgoing one (about plan.CROSSFADE_S), centred on the bar
  line; neither tempo is stretched.
A track without a steady beat (no beats in its record) keeps the clock, as a plan with beat sync off does.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from music_mood.beats import beat_times, downbeat_times
from music_mood.database import Database
from music_mood.pieces import TrackChooser, new_piece, track_duration, track_stretch
from music_mood.plan import CROSSFADE_S, Piece
from music_mood.search import best_segment_start

ENDING_BEATS = 0.75  # the soundtrack ends on its track's own ending when that is this close to the length asked
END_MARGIN_S = 0.05  # a stretch ends at least this much before its track does (decoders differ by a frame)


@dataclass
class Grid:
    """A track's beats and downbeats, seconds into the track."""

    beats: np.ndarray
    downbeats: np.ndarray

    @property
    def period(self) -> float:
        return float(np.median(np.diff(self.beats)))

    @property
    def bar(self) -> float:
        return float(np.median(np.diff(self.downbeats))) if len(self.downbeats) > 1 else 4 * self.period


def track_grid(track: dict) -> Grid | None:
    """The beat grid stored with a track (beats.py), or None: no steady beat, or a record without one."""
    beats = beat_times(track.get("beats"))
    downbeats = downbeat_times(track.get("beats"))
    return Grid(beats, downbeats) if len(beats) > 4 and len(downbeats) else None


@dataclass
class SyncedScene:
    """One scene cut on the beat: its pieces (row, Piece), when each of its photos starts, when it ends, and how
    the soundtrack fades out when it is the last (None: the plan's fade)."""

    pieces: list[tuple[int, Piece]]
    photo_starts: list[float]
    end_s: float
    fade_out_s: float | None = None


def synced_scene(db: Database, chooser: TrackChooser, vector: np.ndarray, start_s: float, ideal_end_s: float,
                 ideal_starts: list[float], final: bool, fixed_end_s: float | None = None) -> SyncedScene:
    """The scene that starts at `start_s` (a bar line) with photos the clock starts at `ideal_starts` (the first
    is the scene's) and ends at `ideal_end_s`; the last of the soundtrack when `final`. `fixed_end_s`: the scene
    must end exactly there (a scene's track replaced in a plan whose other scenes stay as they are)."""
    pieces: list[tuple[int, Piece]] = []
    at, rows, fade_out = start_s, [], None
    min_end = start_s + 0.5 * (ideal_end_s - start_s)  # a scene is never cut to less than half its clock length
    while True:
        row, score = chooser.pick(vector, set(rows))
        rows.append(row)
        track, grid = db.tracks[row], track_grid(db.tracks[row])
        duration = track_duration(track)
        best = best_segment_start(db, row, vector) or 0.0
        if grid is not None and duration - _start_downbeat(grid, best, duration) < grid.bar:
            grid = None  # shorter than a bar from its first downbeat: nothing to cut on
        if grid is None:  # no steady beat: by the clock
            target = fixed_end_s if fixed_end_s is not None else ideal_end_s
            track_start, track_end = track_stretch(duration, best, target - at)
            end = min(target, at + track_end - track_start)
            pieces.append((row, new_piece(track, score, track_start, at, end, tempo_bpm=track.get("bpm"))))
            if end >= target - 1e-9:
                return SyncedScene(pieces, _snap_photos(pieces, ideal_starts, ideal_end_s, end), end)
            at = end
            continue
        track_start = _start_downbeat(grid, best, duration)
        offset = at - track_start  # soundtrack time = track time + offset
        last_s = duration - END_MARGIN_S + offset  # the latest the stretch may end
        end, done = _scene_end(grid, offset, at, max(min_end, at + (grid.period if final else grid.bar)), last_s,
                               ideal_end_s, final,
                               fixed_end_s)
        ending = duration + offset  # the track's own ending, in soundtrack time
        if done and final and fixed_end_s is None and abs(ending - ideal_end_s) <= ENDING_BEATS * grid.period:
            end = min(duration + offset, last_s + END_MARGIN_S)  # the track's own ending, within a beat
        elif done and final:
            fade_out = grid.bar
        pieces.append((row, new_piece(track, score, track_start, at, end, **_beats_in(grid, offset, at, end),
                                      **_bar_and_beat(grid, track_start), tempo_bpm=track.get("bpm"))))
        if done:
            return SyncedScene(pieces, _snap_photos(pieces, ideal_starts, ideal_end_s, end), end, fade_out)
        at = end


def _start_downbeat(grid: Grid, best: float, duration: float) -> float:
    """Where a stretch starts: the last downbeat at or before the track's best moment that leaves a bar to play,
    else its first downbeat."""
    usable = grid.downbeats[grid.downbeats <= max(duration - grid.bar, 0.0)]
    before = usable[usable <= best + 1e-6]
    return float(before[-1] if len(before) else (usable[0] if len(usable) else grid.downbeats[0]))


def _scene_end(grid: Grid, offset: float, at: float, earliest: float, last_s: float, ideal_end_s: float,
               final: bool, fixed_end_s: float | None) -> tuple[float, bool]:
    """(where this piece ends, whether the scene ends there): the scene's end when the track plays long enough
    (a downbeat nearest the clock; for the last scene the beat nearest it; `fixed_end_s` when given), else the
    track's last bar line (at least a bar after `at`), or its end when it has no bar line left."""
    target = fixed_end_s if fixed_end_s is not None else ideal_end_s
    marks = (grid.beats if final else grid.downbeats) + offset
    if last_s >= target - (0 if fixed_end_s is not None else grid.period / 2):
        if fixed_end_s is not None:
            return fixed_end_s, True
        candidates = marks[(marks >= earliest - 1e-6) & (marks <= last_s)]
        if len(candidates):
            return float(candidates[np.argmin(np.abs(candidates - target))]), True
    bar_lines = grid.downbeats + offset
    bar_lines = bar_lines[(bar_lines >= at + grid.bar - 1e-6) & (bar_lines <= last_s)]
    if len(bar_lines):
        return float(bar_lines[-1]), False
    return last_s, False


def _beats_in(grid: Grid, offset: float, start_s: float, end_s: float) -> dict:
    """A piece's beats and downbeats within [start_s, end_s), in soundtrack time, and the cross-fade of whole beats
    that would join the next piece to it (set on that piece by crossfades)."""
    beats, downbeats = grid.beats + offset, grid.downbeats + offset
    within = (beats >= start_s - 1e-6) & (beats < end_s - 1e-6)
    down_within = (downbeats >= start_s - 1e-6) & (downbeats < end_s - 1e-6)
    return {"beats_s": [round(float(t), 3) for t in beats[within]],
            "downbeats_s": [round(float(t), 3) for t in downbeats[down_within]]}


def _bar_and_beat(grid: Grid, track_s: float) -> dict:
    """Where `track_s` falls in the track: {"start_bar", "start_beat"}, 1-based, counted from its first downbeat
    (a beat before it is in bar 0)."""
    beat = int(np.argmin(np.abs(grid.beats - track_s)))
    first_down = int(np.argmin(np.abs(grid.beats - grid.downbeats[0])))
    meter = max(1, round(grid.bar / grid.period))
    bar, in_bar = divmod(beat - first_down, meter)
    return {"start_bar": bar + 1, "start_beat": in_bar + 1}


def _strong_beats(piece: Piece) -> list[float]:
    """The beats a photo may change on: every other beat from the piece's first downbeat (the bar's one and three),
    which a tracker that hears the music at half or double our tempo, or a beat late, still hears as beats."""
    if not piece.downbeats_s:
        return piece.beats_s
    first = int(np.argmin(np.abs(np.asarray(piece.beats_s) - piece.downbeats_s[0])))
    return piece.beats_s[first % 2::2]


def _snap_photos(pieces: list[tuple[int, Piece]], ideal_starts: list[float], ideal_end_s: float,
                 end_s: float) -> list[float]:
    """The scene's photo starts: the first at the scene's start, each other on the beat nearest its clock time
    (of the piece playing then) stretched by as much as the scene's end moved onto its bar line (so the photos
    share that change rather than the last one taking it all), at least one beat after the one before and one
    before the scene's end; by the clock where no beat fits (music without a beat)."""
    beats = np.array([t for _, piece in pieces for t in _strong_beats(piece)], dtype=np.float64)
    starts = [pieces[0][1].start_s]
    clock = ideal_end_s - ideal_starts[0]
    scale = (end_s - starts[0]) / clock if clock > 0 else 1.0
    for ideal in (starts[0] + (t - ideal_starts[0]) * scale for t in ideal_starts[1:]):
        left = len(ideal_starts) - len(starts)  # photos still to place, this one included
        gap = float(np.median(np.diff(beats))) if len(beats) > 1 else 0.0
        fits = beats[(beats > starts[-1] + gap / 2) & (beats < end_s - left * gap + gap / 2)] if gap else beats[:0]
        starts.append(float(fits[np.argmin(np.abs(fits - ideal))]) if len(fits) else
                      min(max(ideal, starts[-1]), end_s))
    return starts


def set_crossfades(pieces: list[Piece]) -> None:
    """Each piece after the first gets its cross-fade: whole beats of the piece before it, about CROSSFADE_S (the
    plan's, by the clock, where that piece has no beats)."""
    for before, piece in itertools.pairwise(pieces):
        if len(before.beats_s) > 1:
            period = float(np.median(np.diff(before.beats_s)))
            piece.crossfade_s = round(max(1, round(CROSSFADE_S / period)) * period, 3)
