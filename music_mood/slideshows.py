"""What the web page makes of a set of photos: a soundtrack planned (music_mood.soundtrack) and rendered
(music_mood.render) into a folder of its own (serve.RenderFolders), a scene's track replaced by the next-best, and
the answer the /soundtrack API gives. No Gradio here: app.py runs these in a worker thread and shows them."""
from __future__ import annotations

import contextvars
import shutil
from dataclasses import dataclass

from music_mood.database import Database
from music_mood.models import stoppable
from music_mood.render import write_outputs, write_thumbnails
from music_mood.search import NO_FILTERS, Filters
from music_mood.serve import RENDER_ROUTE, RenderFolders, track_url
from music_mood.soundtrack import (
    DEFAULT_SECONDS_PER_PHOTO,
    Plan,
    named_skipped_photo,
    plan_soundtrack,
    replace_scene_track,
)

# What the page renders for a soundtrack (all from one write_outputs call), by the kind the API names them: the
# editors' timelines share the mixed soundtrack beside them, timeline.wav (timeline.mixed_audio_path).
SLIDESHOW_FILES = {"mp4": "slideshow.mp4", "m4a": "soundtrack.m4a", "m3u8": "playlist.m3u8", "json": "plan.json",
                   "otio": "timeline.otio", "xml": "timeline.xml", "edl": "timeline.edl", "wav": "timeline.wav"}
THUMBNAILS = "thumbs"  # the folder of the photos' thumbnails in a render folder: 000.jpg, 001.jpg...


@dataclass
class Slideshow:
    """A soundtrack as the page shows it (kept in the session's gr.State): the plan, which holds the filters it was
    made with (a scene's next-best keeps to them), and the token of the RenderFolders folder holding its files."""

    plan: Plan
    token: str

    @property
    def filters(self) -> Filters:
        return self.plan.filters


def make_slideshow(renders: RenderFolders, blip, clap, db: Database, photos: list[str],
                   seconds_per_photo: float = DEFAULT_SECONDS_PER_PHOTO, text: str = "",
                   filters: Filters = NO_FILTERS, should_stop=None, on_progress=None, servers=None,
                   beat_sync: bool = True) -> Slideshow:
    """The /soundtrack work: plan a soundtrack of `db`'s tracks for `photos` (plan_soundtrack: each photo
    described once, in this order, the tracks kept by `filters`) and render it into a new folder of `renders`
    (render_slideshow_files; `servers`, the library's remote.ServerConnections, give its servers' songs).

    should_stop() is asked before every model call (models.stoppable) and between rendering steps: True raises
    ModelStopped or RenderCancelled. Raises the core's errors (the page turns them into messages); the folder is
    removed on any failure. Never changes the library.
    """
    should_stop = should_stop or (lambda: False)
    plan = plan_soundtrack(stoppable(blip, should_stop), clap, db, photos, seconds_per_photo=float(seconds_per_photo),
                           text=text or "", filters=filters, progress=False, beat_sync=beat_sync)
    return render_slideshow_files(renders, plan, should_stop, on_progress, servers=servers)


def render_slideshow_files(renders: RenderFolders, plan: Plan, should_stop=None, on_progress=None,
                           thumbnails_from: str | None = None, servers=None) -> Slideshow:
    """Render `plan` into a new folder of `renders`: SLIDESHOW_FILES (one write_outputs call, all or nothing) and
    the photos' thumbnails (copied from the folder of token `thumbnails_from` when it still has them: the photos
    are the same). Returns its Slideshow; on any failure or cancel the new folder is removed."""
    token, folder = renders.new()
    try:
        earlier = renders.folder(thumbnails_from)
        if earlier is not None and (earlier / THUMBNAILS).is_dir():
            shutil.copytree(earlier / THUMBNAILS, folder / THUMBNAILS)
        else:
            write_thumbnails(plan, folder / THUMBNAILS, should_stop=should_stop)
        # Outside the caller's context: a Gradio page tracks the tqdm bars made in it (gr.Progress(track_tqdm=True),
        # for the photos being described), and render's own would show beside the fraction on_progress reports.
        contextvars.Context().run(write_outputs, plan, [folder / name for name in SLIDESHOW_FILES.values()],
                                  progress=False, should_stop=should_stop, on_progress=on_progress, served=True,
                                  servers=servers)
    except BaseException:
        renders.remove(token)
        raise
    return Slideshow(plan=plan, token=token)


def next_best_slideshow(renders: RenderFolders, db: Database, slideshow: Slideshow, scene_index: int,
                        should_stop=None, on_progress=None, servers=None) -> Slideshow:
    """The /next_best_track work: `slideshow` with scene `scene_index`'s track replaced by the next-best
    (replace_scene_track: no photo is described again), rendered into a new folder. The old folder is the
    caller's to remove once the page shows the new one."""
    plan = replace_scene_track(db, slideshow.plan, scene_index)
    return render_slideshow_files(renders, plan, should_stop, on_progress, thumbnails_from=slideshow.token,
                                  servers=servers)


def slideshow_answer(slideshow: Slideshow, db: Database) -> dict:
    """What /soundtrack and /next_best_track answer: the plan as served (Plan.to_served_dict: no path of the
    server, each photo named by its file name only), each photo's thumbnail_url, each piece's audio_url (the
    library's track on this server, by its id in `db`: a plan names its pieces by file_path; a track removed
    meanwhile gets the bare route, which plays nothing), and "files": the URL of each rendered file by kind
    (SLIDESHOW_FILES), all relative to the server. A server's song is named by its track's id, never by its
    server's address (Plan.to_served_dict).

    A photo's path is its temporary copy on the server, of no use to a client; and gradio_client takes any dict
    with a "path" for a file to download, so an answer holding one would reach the client changed."""
    answer = slideshow.plan.to_served_dict()
    base = f"{RENDER_ROUTE}{slideshow.token}/"
    for i, photo in enumerate(answer["photos"]):
        photo["thumbnail_url"] = f"{base}{THUMBNAILS}/{i:03d}.jpg"
    for scene, planned in zip(answer["scenes"], slideshow.plan.scenes):
        for piece, kept in zip(scene["pieces"], planned.pieces):
            row = db.row_of_file(kept.file_path)  # as planned: a served server song's file_path is its id
            piece["audio_url"] = track_url("" if row is None else str(db.tracks[row]["id"]))
    answer["files"] = {kind: base + name for kind, name in SLIDESHOW_FILES.items()}
    return answer


def skipped_photos(plan: Plan) -> list[dict]:
    """[{"name", "error"}] of the photos left out of `plan` because they cannot be read: each named by its file
    name, in its error message too (an upload's path on the server means nothing to the user)."""
    return [named_skipped_photo(skipped) for skipped in plan.skipped_photos]
