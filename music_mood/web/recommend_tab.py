"""The Recommend tab: a photo, words or a track in, the library's tracks that fit out, each with its player and
why (the /recommend and /more_like_this endpoints)."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from music_mood.database import Database, find_track
from music_mood.live import LiveLibrary
from music_mood.memory import release_freed_memory
from music_mood.models import BackgroundModels
from music_mood.recommendation import Recommendation, recommend
from music_mood.remote import page_file_path
from music_mood.search import BPM_RANGE_FORMS, DEFAULT_MAX_PER_ARTIST, BpmRange, Filters, parse_bpm_range
from music_mood.web.errors import logged_as_one_line, user_errors
from music_mood.web.playlists import SavePlaylistBox, recommended_tracks
from music_mood.web.views import audio_url, page_asset, render_analysis, render_tracks, unreadable_photo_message

TOPK_MAX = 20
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")
ASK_MORE_LIKE_THIS = page_asset("more_like_this.js")  # a result's "More like this" button asks /more_like_this


def tempo_filter(bpm: str | None) -> BpmRange | None:
    """The page's tempo box ("80-110", "80-", "-110", "120"; empty: no filter) as a filter for recommend();
    gr.Error saying what it takes when it does not read as a range."""
    if bpm is None or not str(bpm).strip():
        return None
    try:
        return parse_bpm_range(bpm)
    except ValueError as e:
        raise gr.Error(f"Tempo: {e}.") from e


def recommend_photo(library: LiveLibrary, blip, clap, image, text: str = "", topk: int = 10, moods=None,
                    genres=None, max_per_artist: int = DEFAULT_MAX_PER_ARTIST, diversity: float = 0.0,
                    bpm: str = "") -> dict:
    """The /recommend endpoint: Recommendation.to_dict() plus each track's audio_url on this server; `bpm` is the
    tempo box's text (tempo_filter).

    `max_per_artist` (0: no cap) and `diversity` (MMR, 0..1) are recommend()'s variety options, checked by the
    page's sliders before this runs.

    Raises gr.Error with a message for the user for anything the user can fix (user_errors); the server keeps
    serving. A track left out because its file is gone is named in a warning too, as the CLI does.
    """
    tempo = tempo_filter(bpm)
    with user_errors([image] if isinstance(image, str) else ()):
        db = library.current()  # one version of the library for the whole request
        rec = recommend(blip, clap, db, image=image, text=text, topk=int(topk), filters=Filters(moods, genres, tempo),
                        max_per_artist=int(max_per_artist), diversity=float(diversity))
    return answer_of(rec, db)


def recommend_like(library: LiveLibrary, like: str, topk: int = 10, moods=None, genres=None,
                   max_per_artist: int = DEFAULT_MAX_PER_ARTIST, diversity: float = 0.0, bpm: str = "") -> dict:
    """The /more_like_this endpoint: recommend(like=...) on the current library, shaped as /recommend's answer.

    `like` is a track's file_path (as in a result) or id; it needs no model, so it answers while they load. The
    variety options are /recommend's.
    """
    tempo = tempo_filter(bpm)
    with user_errors():
        db = library.current()
        rec = recommend(None, None, db, topk=int(topk), filters=Filters(moods, genres, tempo), like=like,
                        max_per_artist=int(max_per_artist), diversity=float(diversity))
        liked = db.tracks[find_track(db, like)]
    # The query says which track, by its file_path: a server track's would tell its server's address.
    rec.query_text = rec.query_text.replace(str(liked["file_path"]), page_file_path(liked))
    return answer_of(rec, db)


def answer_of(rec: Recommendation, db: Database) -> dict:
    """A Recommendation of `db`'s tracks as the API answers it: its dict, each track with its player's URL and named
    as a page names it (remote.page_file_path: a server's song by its id, never by its server's address); a track
    whose file is missing is named in a warning."""
    for path in rec.skipped_missing:
        gr.Warning(f"{path} is in the library but its file is missing; left out of the results.")
    result = rec.to_dict()
    for track in result["results"]:
        track["audio_url"] = audio_url(track["id"])
        rows = db.rows_with("id", track["id"])
        if rows:
            track["file_path"] = page_file_path(db.tracks[rows[0]])
    return result


def photo_input(**kwargs) -> gr.Image:
    """gr.Image that answers a file Pillow cannot open with a message, not a bare "Error".

    The check wraps this one instance: subclassing gr.Image would make Gradio write a .pyi stub beside this module.
    """
    image = gr.Image(**kwargs)
    preprocess = image.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, DecompressionBombError...
            name = getattr(payload, "orig_name", None) or "the file"
            raise gr.Error(unreadable_photo_message(name, e)) from e

    image.preprocess = logged_as_one_line(checked)
    return image


class RecommendTab:
    """The Recommend tab as a gr.Blocks of its own (`blocks`, rendered into the page): its layout, its events and
    their handlers. `moods` and `genres` are its filters, whose choices the page keeps to the library's."""

    def __init__(self, library: LiveLibrary, models: BackgroundModels):
        self.library, self.models = library, models
        with gr.Blocks() as self.blocks:
            self._lay_out()
            self._wire()

    def _lay_out(self) -> None:
        with gr.Row():
            with gr.Column(scale=1):
                self._lay_out_query()
            with gr.Column(scale=2):
                self.caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption")
                self.mood_words = gr.Textbox(label="Mood words", interactive=False, elem_id="mood-words")
                self.query_text = gr.Textbox(label="Query text (exactly what CLAP embeds)", interactive=False,
                                             elem_id="query-text")
                self.tracks = gr.HTML(render_tracks({}), elem_id="tracks", js_on_load=ASK_MORE_LIKE_THIS)
                self.playlist = SavePlaylistBox("recommend")  # these tracks, as a playlist in the library folder
                with gr.Accordion("As JSON (what the /recommend API returns)", open=False):
                    self.result = gr.JSON(label="Recommendation", elem_id="result")
                # What each result's "More like this" button sets and presses (ASK_MORE_LIKE_THIS): in the page
                # but not shown, so its script can reach them.
                self.like = gr.Textbox("", visible="hidden", elem_id="like")
                self.like_button = gr.Button("More like this", visible="hidden", elem_id="more-like-this")

    def _lay_out_query(self) -> None:
        self.image = photo_input(label="Photo", type="filepath", image_mode=None,
                                 sources=["upload", "webcam", "clipboard"], elem_id="photo")
        self.text = gr.Textbox("", label="Words (optional)", placeholder="rainy night, jazz", elem_id="text")
        self.topk = gr.Slider(1, TOPK_MAX, value=10, step=1, label="How many tracks", elem_id="topk")
        self.moods = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                 label="Only these moods", elem_id="moods")
        self.genres = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                  label="Only these genres", elem_id="genres")
        self.bpm = gr.Textbox("", label="Only this tempo (BPM)", placeholder="80-110", info=BPM_RANGE_FORMS,
                              elem_id="bpm")
        with gr.Accordion("Options", open=False, elem_id="options"):
            self.max_per_artist = gr.Slider(0, TOPK_MAX, value=DEFAULT_MAX_PER_ARTIST, step=1,
                                            label="At most this many tracks of one artist (and of one album); "
                                                  "0 = no cap", elem_id="max-per-artist")
            self.diversity = gr.Slider(0, 1, value=0, step=0.05, label="Variety: 0 = the closest tracks; higher "
                                       "trades closeness for tracks unlike each other (MMR)", elem_id="diversity")
        for option in (self.topk, self.max_per_artist, self.diversity):  # an API call may ask for values off them
            option.preprocess = logged_as_one_line(option.preprocess)
        self.button = gr.Button("Recommend", variant="primary", elem_id="recommend")
        examples = [[str(EXAMPLES / name)] for name in EXAMPLE_PHOTOS if (EXAMPLES / name).exists()]
        if examples:
            gr.Examples(examples, inputs=[self.image], label="Example photos")

    def _wire(self) -> None:
        query = [self.image, self.text, self.topk, self.moods, self.genres, self.max_per_artist, self.diversity,
                 self.bpm]
        shown = [self.caption, self.mood_words, self.query_text, self.tracks]
        asked = [
            self.button.click(logged_as_one_line(self.on_recommend), inputs=query, outputs=self.result,
                              concurrency_id="models", api_name="recommend"),
            # Dropping in a photo is asking for its music; the button then re-asks with other words, top-k or
            # filters, which is quick because the photo's caption and mood words are remembered.
            self.image.change(logged_as_one_line(self.on_photo), inputs=query, outputs=self.result,
                              concurrency_id="models", api_visibility="private"),
            self.like_button.click(logged_as_one_line(self.on_like), inputs=[self.like, *query[2:]],
                                   outputs=self.result, api_name="more_like_this", queue=False),
        ]
        for event in asked:
            event.success(render_analysis, inputs=self.result, outputs=shown, api_visibility="private", queue=False)
        self.playlist.wire(self.library, self.result, recommended_tracks)

    # The variety options, then the tempo box, come last, with their defaults: a client that does not send them
    # still works.
    def on_recommend(self, image, text, topk, moods, genres, max_per_artist=DEFAULT_MAX_PER_ARTIST, diversity=0.0,
                     bpm=""):
        tempo_filter(bpm)  # a mistyped range is said at once, before waiting for the models
        with user_errors():
            blip, clap = self.models.query_models()
        try:
            return recommend_photo(self.library, blip, clap, image, text, topk, moods, genres, max_per_artist,
                                   diversity, bpm)
        finally:
            release_freed_memory()  # a query's activations, ~200 MB, would otherwise stay in the server's RSS

    def on_photo(self, image, text, topk, moods, genres, max_per_artist=DEFAULT_MAX_PER_ARTIST, diversity=0.0,
                 bpm=""):
        """A new photo (upload, webcam, paste, example) is answered at once; clearing it changes nothing."""
        if image is None:
            return gr.skip()
        return self.on_recommend(image, text, topk, moods, genres, max_per_artist, diversity, bpm)

    def on_like(self, like, topk, moods, genres, max_per_artist=DEFAULT_MAX_PER_ARTIST, diversity=0.0, bpm=""):
        return recommend_like(self.library, like, topk, moods, genres, max_per_artist, diversity, bpm)
