"""Soundtrack plans made by hand, without models: what the rendering tests and the soundtrack benchmark render."""
from __future__ import annotations

from pathlib import Path

from music_mood.soundtrack import Piece, Plan, PlanPhoto, Scene


def hand_made_plan(library_root: Path, tracks: list[str], photos: list[Path], seconds_per_photo: float,
                   photos_per_scene: int, track_start_s: float | list[float] = 5.0, **plan_fields) -> Plan:
    """Photos shown in order for `seconds_per_photo` each, cut into scenes of `photos_per_scene` photos; scene i
    plays tracks[i] (a path relative to library_root) from track_start_s (or its i-th item) on, for as long as the
    scene lasts."""
    shown = [PlanPhoto(path=str(photo), name=Path(photo).name, caption=f"photo {i}", mood_words=["calm"],
                       start_s=i * seconds_per_photo, end_s=(i + 1) * seconds_per_photo)
             for i, photo in enumerate(photos)]
    scenes = []
    for index, first in enumerate(range(0, len(shown), photos_per_scene)):
        members = list(range(first, min(first + photos_per_scene, len(shown))))
        start_s, end_s = shown[members[0]].start_s, shown[members[-1]].end_s
        track = tracks[index]
        start = track_start_s[index] if isinstance(track_start_s, list) else track_start_s
        piece = Piece(file_path=track, title=Path(track).stem.replace("_", " "), artist="Sample Artist", score=0.5,
                      track_start_s=start, track_end_s=start + end_s - start_s,
                      start_s=start_s, end_s=end_s)
        scenes.append(Scene(index=index, photos=members, start_s=start_s, end_s=end_s, mood_words=["calm"],
                            query_text="calm", vector=[1.0, 0.0], pieces=[piece]))
    return Plan(**{"library_root": str(library_root), "seconds_per_photo": seconds_per_photo,
                   "total_s": len(shown) * seconds_per_photo, "text": "", "photos": shown, "scenes": scenes,
                   **plan_fields})
