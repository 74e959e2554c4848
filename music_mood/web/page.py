"""The page: its header and the models' status, the three tabs (each a gr.Blocks of its own module, rendered
here), the library view they share (shown as stored whenever a page opens), and the one queue of model calls."""
from __future__ import annotations

import gradio as gr

from music_mood.live import LiveLibrary
from music_mood.models import BackgroundModels
from music_mood.serve import RenderFolders
from music_mood.web.errors import logged_as_one_line
from music_mood.web.guards import UPLOAD_KEEP_S, UPLOAD_SWEEP_S, refuse_foreign_files
from music_mood.web.library_tab import LibraryTab
from music_mood.web.playlists import add_save_playlist_api
from music_mood.web.recommend_tab import RecommendTab
from music_mood.web.slideshow_tab import SlideshowTab
from music_mood.web.views import page_asset

QUEUE_SIZE = 16  # waiting requests beyond this are refused at once rather than left to time out
CSS = page_asset("page.css")  # given to launch() (Gradio 6 takes the page's CSS there)


def build_app(library: LiveLibrary, models: BackgroundModels, renders: RenderFolders | None = None) -> gr.Blocks:
    """The Gradio Blocks of the page; `models` may still be loading when it is served. `renders` holds what the
    Slideshow tab renders (a new RenderFolders, whose folder is made on first use, if not given).

    Each tab is a gr.Blocks built on its own, then rendered into its gr.Tab here, as Gradio's multi-page demos do:
    its events come with it. The Library tab's changes show the library in the other tabs' filters too, so it is
    given them.
    """
    renders = renders if renders is not None else RenderFolders()
    # Gradio removes the uploads it keeps (photos, which the page may ask about again) after UPLOAD_KEEP_S, and
    # all of them when the server stops; audio uploads are removed by the add-music handler once copied.
    demo = gr.Blocks(title="Music for a photo", analytics_enabled=False, delete_cache=(UPLOAD_SWEEP_S, UPLOAD_KEEP_S))
    recommending = RecommendTab(library, models)
    slideshow = SlideshowTab(library, models, renders)
    library_tab = LibraryTab(library, models, demo, filters=[(recommending.moods, recommending.genres),
                                                            (slideshow.moods, slideshow.genres)])
    with demo:
        gr.Markdown("# Music for a photo\nUpload a photo: it is captioned, given mood words, and matched against "
                    "your music library. Each track plays from its best-matching moment.")
        status = gr.Markdown(models.status(), visible=bool(models.status()), elem_id="model-status")
        timer = gr.Timer(1.0, active=not models.ready.is_set())
        for name, tab in (("Recommend", recommending), ("Slideshow", slideshow), ("Library", library_tab)):
            with gr.Tab(name):
                tab.blocks.render()
        add_save_playlist_api(library)  # what both tabs' "Save as playlist" does, for clients
        # Every page opens on the library as it is then, not as it was when the server started.
        demo.load(logged_as_one_line(library_tab.show_library), outputs=[*library_tab.view, library_tab.status],
                  api_visibility="private", queue=False)

        def on_tick():
            """Shows the models' state until they are loaded, then stops polling."""
            text = models.status()
            return gr.update(value=text, visible=bool(text)), gr.Timer(active=not models.ready.is_set())

        demo.load(on_tick, outputs=[status, timer], api_visibility="private", queue=False)
        timer.tick(on_tick, outputs=[status, timer], api_visibility="private", queue=False)
    # One model call at a time (they use every core anyway), and a bounded wait line.
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    refuse_foreign_files(demo)
    return demo
