"""The Slideshow tab: a set of photos in, one soundtrack from the library and a slideshow video out, a scene's track
replaced on request (the /soundtrack and /next_best_track endpoints); Cancel stops the work in progress."""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading

import gradio as gr

from music_mood.live import LiveLibrary
from music_mood.memory import release_freed_memory
from music_mood.models import BackgroundModels
from music_mood.search import Filters
from music_mood.serve import RenderFolders
from music_mood.slideshows import (
    Slideshow,
    make_slideshow,
    next_best_slideshow,
    skipped_photos,
    slideshow_answer,
)
from music_mood.soundtrack import DEFAULT_SECONDS_PER_PHOTO, MAX_PHOTOS, MAX_SECONDS_PER_PHOTO, MIN_PHOTOS
from music_mood.web.errors import logged_as_one_line, user_errors
from music_mood.web.guards import UPLOAD_KEEP_S, upload_paths
from music_mood.web.playlists import SavePlaylistBox, soundtrack_tracks
from music_mood.web.views import page_asset, render_slideshow, slideshow_status

# At most this many photos per soundtrack (the CLI takes MAX_PHOTOS): describing them takes about a second each,
# rendering their video a few seconds more, and a request holds the models all that time.
MAX_SLIDESHOW_PHOTOS = 60
# The page's seconds per photo, up to the core's limit; a set longer than soundtrack.MAX_TOTAL_S is refused by the
# core (plan_soundtrack), one message, as for the CLI.
SLIDESHOW_SECONDS = (1.0, MAX_SECONDS_PER_PHOTO)
ASK_NEXT_BEST = page_asset("next_best.js")  # a scene's "Next-best track" button asks /next_best_track
# The photos in file-name order, numbers compared as numbers (IMG_2 before IMG_10): run in the browser when photos
# are added and by the "Sort by file name" button; dragging a file in the list reorders it afterwards. The list is
# returned inside a list: Gradio reads a JavaScript function's array as one value per output.
SORT_BY_NAME = page_asset("sort_by_name.js")


def slideshow_photos(files) -> list[str]:
    """The photos of a /soundtrack request, in the order given; gr.Error unless there are MIN_PHOTOS to
    MAX_SLIDESHOW_PHOTOS of them (checked before any model work)."""
    photos = [str(file) for file in files or []]
    if len(photos) < MIN_PHOTOS:
        raise gr.Error(f"Drop in {MIN_PHOTOS} to {MAX_SLIDESHOW_PHOTOS} photos first (a soundtrack is for a set; "
                       f"for one photo, use the Recommend tab).")
    if len(photos) > MAX_SLIDESHOW_PHOTOS:
        raise gr.Error(f"At most {MAX_SLIDESHOW_PHOTOS} photos make one soundtrack here, not {len(photos)}: split "
                       f"the set, or use python recommend.py --soundtrack, which takes up to {MAX_PHOTOS}.")
    return photos


async def run_until_cancelled(work, *args):
    """work(should_stop, *args) in a worker thread, its result or its exception; the caller's context (Gradio's
    progress, warnings) goes with it.

    Gradio cancels an event (the page's Cancel, gradio_client's job.cancel()) by cancelling the asyncio task that
    awaits its function; a thread cannot be interrupted, so a plain function would run on to its end. Here the
    cancel makes should_stop() answer True, and it completes only once the worker has stopped and removed what
    it had made (at the next model call or rendering step: well under a second).
    """
    stop = threading.Event()
    future = asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, work, stop.is_set,
                                                        *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):  # a second cancel: still wait for the cleanup
                await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: it is ModelStopped or RenderCancelled, which the cancel explains
        raise


def progress_reporter(progress):
    """write_outputs' on_progress(fraction, text) shown through the page's gr.Progress, from any thread or context
    (rendering runs in a worker thread, see run_until_cancelled)."""
    context = contextvars.copy_context()
    return lambda fraction, text: context.run(progress, fraction, desc=text)


class SlideshowTab:
    """The Slideshow tab as a gr.Blocks of its own (`blocks`, rendered into the page): its layout, its events and
    their handlers. `renders` holds what it renders, one folder per soundtrack (served by serve.render_routes).
    `moods` and `genres` are its filters, whose choices the page keeps to the library's.

    Its work runs in a worker thread (run_until_cancelled) so that Cancel can stop it; the session's Slideshow
    (gr.State) names the folder of its files, removed when the next one is ready, when Gradio deletes the state (an
    hour after it was set, as the uploaded photos) and when the server stops.
    """

    def __init__(self, library: LiveLibrary, models: BackgroundModels, renders: RenderFolders):
        self.library, self.models, self.renders = library, models, renders
        with gr.Blocks() as self.blocks:
            gr.Markdown(f"Drop in the photos of an album, a trip or an event ({MIN_PHOTOS} to "
                        f"{MAX_SLIDESHOW_PHOTOS}): they get one soundtrack from your library, cut into scenes "
                        f"where the photos change, and a slideshow video with it. The photos are shown in the "
                        f"order of the list, file-name order as they are added; drag one to move it.")
            with gr.Row():
                with gr.Column(scale=1):
                    self._lay_out_request()
                with gr.Column(scale=2):
                    self.view = gr.HTML(render_slideshow(None), min_height=200, elem_id="slideshow",
                                        js_on_load=ASK_NEXT_BEST)
                    self.playlist = SavePlaylistBox("slideshow")  # its tracks, in play order
                    with gr.Accordion("As JSON (what the /soundtrack API returns)", open=False):
                        self.result = gr.JSON(label="Soundtrack", elem_id="slideshow-result")
                    # What a scene's "Next-best track" button sets and presses (ASK_NEXT_BEST).
                    self.next_scene = gr.Number(0, precision=0, visible="hidden", elem_id="next-scene")
                    self.next_best = gr.Button("Next-best track", visible="hidden", elem_id="next-best")
            self.state = gr.State(None, time_to_live=UPLOAD_KEEP_S)  # as long as its photos are kept
            self.state.delete_callback = lambda slideshow: renders.remove(getattr(slideshow, "token", None))
            self._wire()

    def _lay_out_request(self) -> None:
        self.photos = gr.File(label="Photos, in the order shown", file_count="multiple", file_types=["image"],
                              type="filepath", allow_reordering=True, height=320, elem_id="slideshow-photos")
        self.photos.preprocess = upload_paths
        self.sort_photos = gr.Button("Sort by file name", size="sm", elem_id="sort-photos")
        self.seconds = gr.Slider(*SLIDESHOW_SECONDS, value=DEFAULT_SECONDS_PER_PHOTO, step=0.5,
                                 label="Seconds per photo", elem_id="slideshow-seconds")
        self.seconds.preprocess = logged_as_one_line(self.seconds.preprocess)  # an API call may ask for more
        self.text = gr.Textbox("", label="Words for the whole set (optional)", placeholder="wedding, joyful",
                               elem_id="slideshow-text")
        self.moods = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                 label="Only these moods", elem_id="slideshow-moods")
        self.genres = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                  label="Only these genres", elem_id="slideshow-genres")
        self.beat_sync = gr.Checkbox(True, label="Cut on the beat", info="photos change on the music's beats, scenes "
                                     "on its downbeats; off: every photo lasts exactly the seconds above",
                                     elem_id="beat-sync")
        with gr.Row():
            self.make = gr.Button("Make the soundtrack", variant="primary", scale=2, elem_id="make-soundtrack")
            self.stop = gr.Button("Cancel", variant="stop", scale=1, elem_id="cancel-soundtrack")
        self.status = gr.Markdown("", elem_id="slideshow-status")

    def _wire(self) -> None:
        """Photos in, a soundtrack planned and rendered (/soundtrack); a scene's track replaced (/next_best_track).
        Both hold the models' turn: they describe photos or render, using every core."""
        answered = [self.result, self.state]
        making = self.make.click(
            logged_as_one_line(self.on_make), inputs=[self.photos, self.seconds, self.text, self.moods, self.genres,
                                                      self.beat_sync, self.state],
            outputs=answered, api_name="soundtrack", concurrency_id="models", show_progress_on=self.view)
        replacing = self.next_best.click(
            logged_as_one_line(self.on_next_best), inputs=[self.next_scene, self.state], outputs=answered,
            api_name="next_best_track", concurrency_id="models", show_progress_on=self.view)
        for event in (making, replacing):
            event.success(render_slideshow, inputs=self.result, outputs=self.view, api_visibility="private",
                          queue=False).success(slideshow_status, inputs=self.result, outputs=self.status,
                                               api_visibility="private", queue=False)
        self.stop.click(self.on_stop, outputs=self.status, cancels=[making, replacing], api_visibility="private",
                        queue=False)
        self.playlist.wire(self.library, self.state, soundtrack_tracks)
        for event in (self.photos.upload, self.sort_photos.click):  # file-name order, in the browser
            event(None, inputs=self.photos, outputs=self.photos, js=SORT_BY_NAME, api_visibility="private",
                  queue=False)

    async def on_make(self, photos, seconds_per_photo, text, moods, genres, beat_sync, session,
                      progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (how Gradio asks for it)
        if not isinstance(beat_sync, bool):  # a forged request: the checkbox sends true or false
            raise gr.Error("beat_sync is true or false.")
        photos = slideshow_photos(photos)
        report = progress_reporter(progress)

        def work(should_stop):
            with user_errors(photos, soundtrack=True, servers=self.library.server_labels()):
                blip, clap = self.models.query_models()
                try:
                    return make_slideshow(self.renders, blip, clap, self.library.current(), photos,
                                          seconds_per_photo, text, Filters(moods, genres), should_stop, report,
                                          servers=self.library.servers, beat_sync=beat_sync)
                finally:
                    release_freed_memory()

        return self.done(await run_until_cancelled(work), session)

    async def on_next_best(self, scene_index, session, progress=gr.Progress()):  # noqa: B008
        if session is None:
            raise gr.Error("Make a soundtrack first: a scene's track is replaced in the soundtrack this page made.")
        report = progress_reporter(progress)

        def work(should_stop):
            with user_errors([photo.path for photo in session.plan.photos], soundtrack=True,
                             servers=self.library.server_labels()):
                return next_best_slideshow(self.renders, self.library.current(), session, int(scene_index),
                                           should_stop, report, servers=self.library.servers)

        return self.done(await run_until_cancelled(work), session)

    def done(self, slideshow: Slideshow, before: Slideshow | None):
        """The answer of a soundtrack made or changed, the unreadable photos left out named in warnings; the
        session's soundtrack before it is removed (the page shows the new one from now on)."""
        for skipped in skipped_photos(slideshow.plan):
            gr.Warning(f"{skipped['error']}: left out of the soundtrack.")
        if before is not None and before.token != slideshow.token:
            self.renders.remove(before.token)
        with user_errors():
            db = self.library.current()  # the library the page's players will ask /track/ of
        return slideshow_answer(slideshow, db), slideshow

    def on_stop(self):
        return "Cancelled: the work in progress stopped, and the files it had started were removed."
