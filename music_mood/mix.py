"""The soundtrack's audio mix (the first stage of rendering a plan.Plan; render.py writes the files): each
piece's stretch of its track, at one loudness, equal-power cross-fades between pieces, a fade in and a fade out.

Stereo float32 at 44.1 kHz. Each piece plays its stretch of its track, brought to the plan's loudness
(loudness.py: BS.1770 integrated loudness, not RMS); an equal-power cross-fade joins two pieces; the soundtrack
fades in and ends with a fade that reaches zero on its last sample; then the whole is brought to the plan's loudness
with its true peak under a ceiling (loudness.master_loudness).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from music_mood.audio import AudioBytes, AudioError, decode_stretches
from music_mood.loudness import master_loudness, piece_gains
from music_mood.plan import Piece, Plan
from music_mood.remote import ServerConnections
from music_mood.subsonic import SubsonicError

SAMPLE_RATE = 44100
SHORT_TRACK_TOLERANCE_S = 0.1  # a track may end this much before the plan says (decoders differ by a frame)
MIN_CROSSFADE_S = 0.02  # two pieces with less overlap than this are joined by a short dip instead
DIP_S = 0.01
Step = Callable[[int, int], None]  # (done, total) after each step of a long job; raising from it stops the job


class RenderError(RuntimeError):
    """A plan cannot be rendered: a track or photo is missing or unreadable, or the plan contradicts itself."""


def mix_soundtrack(plan: Plan, sample_rate: int = SAMPLE_RATE, on_step: Step | None = None,
                   servers: ServerConnections | None = None) -> np.ndarray:
    """The soundtrack: float32 (round(plan.total_s * sample_rate), 2), stereo, at plan.loudness_lufs integrated
    loudness (±1 LU) with its true peak under -1 dBTP (loudness.py).

    Each piece plays [track_start_s, track_end_s) of its track at [start_s, end_s). At a boundary the outgoing
    track is read on past its end and the incoming one from before its start, up to crossfade_s / 2 each, as far
    as each track has audio, and they cross-fade with equal power (cos/sin gains) over the stretch where both
    have it. Each track is opened once and only its stretches are decoded; a server's song is downloaded once
    into memory through `servers` (remote.ServerConnections). Raises RenderError.
    """
    pieces = [piece for scene in plan.scenes for piece in scene.pieces]
    _check_pieces(plan, pieces)
    n = round(plan.total_s * sample_rate)
    edges = [min(round(p.start_s * sample_rate), n) for p in pieces] + [n]
    # Half of the cross-fade centred on each piece's start (its own, else the plan's; none before the first).
    half = [0.0] + [(p.crossfade_s if p.crossfade_s is not None else plan.crossfade_s) / 2 for p in pieces[1:]] + [0.0]
    last = len(pieces) - 1
    # What each piece reads: from up to its start's half cross-fade before its start to its end's half after its
    # end; grouped by file so that each track is opened once.
    reads = []
    for k, piece in enumerate(pieces):
        from_s = max(0.0, piece.track_start_s - half[k])
        to_s = piece.track_start_s + (edges[k + 1] - edges[k]) / sample_rate + half[k + 1]
        reads.append((from_s, to_s))
    audio = _decode_pieces(plan, pieces, reads, sample_rate, on_step, servers)
    # Per piece: samples before its start (`before`), its body, samples after its end (`after`).
    before, after = [], []
    for k, piece in enumerate(pieces):
        length = edges[k + 1] - edges[k]
        start = round((piece.track_start_s - reads[k][0]) * sample_rate)
        missing = start + length - len(audio[k])
        if missing > SHORT_TRACK_TOLERANCE_S * sample_rate:
            ends = reads[k][0] + len(audio[k]) / sample_rate
            raise RenderError(f"the track {piece.file_path} ends at {ends:.2f} s, but the plan plays it to "
                              f"{piece.track_end_s:.2f} s; plan again")
        if missing > 0:
            audio[k] = np.concatenate([audio[k], np.zeros((missing, 2), np.float32)])
        before.append(start)
        after.append(len(audio[k]) - start - length)
    gains = piece_gains([a[b:len(a) - e] for a, b, e in zip(audio, before, after)], sample_rate,
                        plan.loudness_lufs)
    mix = np.zeros((n, 2), np.float32)
    fades = [_crossfade_span(edges[k], after[k - 1], before[k], sample_rate, n) for k in range(1, len(pieces))]
    for k in range(len(pieces)):
        fade_in = fades[k - 1][1] if k > 0 else None
        fade_out = fades[k][0] if k < last else None
        lo = fade_in[0] if fade_in else edges[k]
        hi = fade_out[1] if fade_out else edges[k + 1]
        envelope = np.full(hi - lo, gains[k], np.float32)
        if fade_in:
            envelope *= np.sin(_ramp(lo, hi, *fade_in) * (np.pi / 2))
        if fade_out:
            envelope *= np.cos(_ramp(lo, hi, *fade_out) * (np.pi / 2))
        offset = before[k] - (edges[k] - lo)
        mix[lo:hi] += audio[k][offset:offset + hi - lo] * envelope[:, None]
        audio[k] = None  # its samples are in the mix now
    fade_out_s = plan.fade_out_s if plan.fade_out_s is not None else plan.fade_s
    for fade, at_end in ((min(round(plan.fade_s * sample_rate), n // 2), False),
                         (min(round(fade_out_s * sample_rate), n // 2), True)):
        if fade > 1:
            curve = np.sin(np.linspace(0.0, np.pi / 2, fade, dtype=np.float32)) ** 2  # 0 → 1, flat at both ends
            if at_end:
                mix[n - fade:] *= curve[::-1, None]  # its last value is 0: silent exactly at total_s
            else:
                mix[:fade] *= curve[:, None]
    master_loudness(mix, sample_rate, plan.loudness_lufs)
    return mix


def _decode_pieces(plan: Plan, pieces: list[Piece], reads: list[tuple[float, float]], sample_rate: int,
                   on_step: Step | None, servers: ServerConnections | None) -> list[np.ndarray]:
    """Each piece's stretch reads[k] of its track, float32 (n, 2). The pieces are grouped by track, so that each
    file is opened once and each server's song downloaded once (the whole file, into memory, never to disk: its
    stretches are then reached by seeks in the bytes as in a file)."""
    by_file: dict[str, list[int]] = {}
    for k, piece in enumerate(pieces):
        by_file.setdefault(piece.file_path, []).append(k)
    audio: list[np.ndarray] = [np.zeros((0, 2), np.float32)] * len(pieces)
    for done, (file_path, indices) in enumerate(by_file.items(), 1):
        piece = pieces[indices[0]]
        source = _server_song(piece, servers) if piece.on_server else Path(plan.library_root) / file_path
        try:
            stretches = decode_stretches(source, [reads[k] for k in indices], sample_rate)
        except AudioError as e:
            where = f"“{piece.title or piece.song_id}” of {piece.source}" if piece.on_server else source
            raise RenderError(f"cannot play {where}: {e}") from e
        for k, stretch in zip(indices, stretches):
            audio[k] = stretch
        if on_step:
            on_step(done, len(by_file))
    return audio


def _server_song(piece: Piece, servers: ServerConnections | None) -> AudioBytes:
    """A server piece's whole song, downloaded into memory; RenderError (one line) when it cannot be."""
    name = f"“{piece.title or piece.song_id}”"
    if servers is None:
        raise RenderError(f"cannot play {name} of the server {piece.source}: this render has no connection to its "
                          f"servers")
    try:
        return servers.song_audio({"source": piece.source, "song_id": piece.song_id, "title": piece.title})
    except SubsonicError as e:
        named = "" if piece.source in str(e) else f" of the server {piece.source}"  # most errors name it already
        raise RenderError(f"cannot download {name}{named}: {e}") from e


def _check_pieces(plan: Plan, pieces: list[Piece]) -> None:
    """The plan's contract for rendering: pieces in order, abutting, covering [0, total_s], each as long in its
    track as in the soundtrack. Raises RenderError naming the first piece that breaks it."""
    def fail(why: str):
        raise RenderError(f"the plan cannot be rendered: {why}")

    if not plan.total_s > 0:
        fail(f"its length is {plan.total_s} s")
    if not pieces:
        fail("it has no music (no scene has a piece)")
    tolerance = 1e-3
    if abs(pieces[0].start_s) > tolerance or abs(pieces[-1].end_s - plan.total_s) > tolerance:
        fail(f"its music runs from {pieces[0].start_s} s to {pieces[-1].end_s} s, not from 0 to {plan.total_s} s")
    for k, piece in enumerate(pieces):
        if not piece.end_s > piece.start_s or piece.track_start_s < 0:
            fail(f"piece {k} ({piece.file_path}) is empty or starts before its track")
        if abs((piece.end_s - piece.start_s) - (piece.track_end_s - piece.track_start_s)) > 0.01:
            fail(f"piece {k} ({piece.file_path}) is not as long in its track as in the soundtrack")
        if k and abs(piece.start_s - pieces[k - 1].end_s) > tolerance:
            fail(f"piece {k} ({piece.file_path}) does not start where piece {k - 1} ends")


def _crossfade_span(boundary: int, after: int, before: int, sample_rate: int, n: int):
    """((start, end) of the outgoing fade, (start, end) of the incoming one), in soundtrack samples within [0, n].

    Both tracks have audio over [boundary - before, boundary + after]: they cross-fade over all of it (but not
    before the soundtrack starts or after it ends, where a piece is shorter than half a cross-fade). Where that is
    too short to hear as a fade (both tracks end/start right at the boundary), the outgoing one fades out just
    before and the incoming one in just after, a dip of a few milliseconds instead of a click."""
    start, end = max(boundary - before, 0), min(boundary + after, n)
    if end - start >= MIN_CROSSFADE_S * sample_rate:
        return (start, end), (start, end)
    dip = round(DIP_S * sample_rate)
    return (max(boundary - dip, 0), boundary), (boundary, min(boundary + dip, n))


def _ramp(lo: int, hi: int, start: int, end: int) -> np.ndarray:
    """For samples lo..hi-1: 0 before `start`, 1 after `end`, linear between (float32, sample centres)."""
    positions = np.arange(lo, hi, dtype=np.float64) + 0.5
    return np.clip((positions - start) / max(end - start, 1), 0.0, 1.0).astype(np.float32)
