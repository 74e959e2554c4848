"""The web page: a Gradio UI around recommend() and the library builder; it serves only the library's audio files."""
from __future__ import annotations

import argparse
import errno
import functools
import html
import mimetypes
import os
import re
import shutil
import signal
import socket
import stat
import sys
import threading
import unicodedata
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from music_mood.audio import AUDIO_EXTENSIONS
from music_mood.build import SAMPLE_PACKAGE, build_library, import_sample_library, pending_files
from music_mood.cli import HelpFormatter, add_library_arguments, add_model_arguments, int_argument
from music_mood.display import TAG_COLUMNS, format_duration, track_tags
from music_mood.images import ImageError
from music_mood.library import (
    EMPTY_LIBRARY,
    Database,
    DatabaseError,
    EmptyLibraryError,
    LibraryPaths,
    committed_state,
    load_database,
)
from music_mood.models import ModelLoadError, release_freed_memory
from music_mood.storage import LibraryBusyError
from recommend import recommend

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD = "200mb"
QUEUE_SIZE = 16  # waiting requests beyond this are refused at once rather than left to time out
UPLOAD_KEEP_S = 3600  # a photo can be asked about again for an hour; then Gradio removes it (checked every 10 min)
UPLOAD_SWEEP_S = 600
TOPK_MAX = 20
TRACK_ROUTE = "/track/"  # + a track's file_path: the only files of the library the server sends
EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")
LIBRARY_COLUMNS = ["#", *(key for key, _ in TAG_COLUMNS), "length", "file"]

# The track route sends the type mimetypes guesses; without /etc/mime.types Python knows no .opus or .m4a, and
# the browser would get application/octet-stream.
mimetypes.add_type("audio/ogg", ".opus")
mimetypes.add_type("audio/mp4", ".m4a")
mimetypes.add_type("audio/flac", ".flac")

CSS = """
.tracks { list-style: none; padding: 0; margin: 0; }
.track { padding: 0.6em 0; border-bottom: 1px solid var(--border-color-primary); }
.track .rank { display: inline-block; min-width: 1.8em; font-weight: bold; }
.track .meta { font-size: 0.9em; opacity: 0.8; margin: 0.2em 0 0.4em 1.8em; }
.track audio { width: calc(100% - 1.8em); margin-left: 1.8em; }
"""


class Library:
    """The library the page recommends from, as last committed: each request takes one Database from current()
    and uses it throughout, so it sees one version even while a builder commits the next."""

    def __init__(self, paths: LibraryPaths, clap_model: str):
        self.paths = paths
        self.clap_model = clap_model
        self._lock = threading.Lock()
        self._db: Database | None = None
        self._version: tuple | None = None
        self._files: set[str] = set()  # the file_path of every track of _db, to answer the track route
        self.current()  # a library that cannot be read is an error at start-up, not at the first request

    def current(self) -> Database:
        """The database as last committed, read again only when its commit point changed (after an upload, or
        `python music_to_vector.py` run meanwhile); one stat per call otherwise. Raises DatabaseError."""
        with self._lock:  # one reader loads a new version; the requests arriving meanwhile wait for it
            return self._refresh()

    def track_file(self, file_path: str) -> Path | None:
        """The file to send for `file_path` when it names a track of the current library, else None.

        A track is sent as listed, through a symlink too (it may point outside the library); a record that names
        a place outside processed_music/ or a file that is not audio is never sent, whatever the metadata says.
        """
        with self._lock:
            db = self._refresh()
            listed = file_path in self._files
        parts = PurePosixPath(file_path).parts
        path = db.root / file_path
        if (not listed or ".." in parts or path.suffix.lower() not in AUDIO_EXTENSIONS
                or not path.is_relative_to(self.paths.processed_music)):
            return None
        return path

    def _refresh(self) -> Database:
        """The current Database, read again if the commit point changed; the caller holds the lock."""
        version = committed_state(self.paths)  # taken before reading: a commit meanwhile is seen next time
        if self._db is None or version != self._version:
            self._db = load_database(self.paths, clap_model=self.clap_model)
            self._files = {str(t["file_path"]) for t in self._db.tracks}
            self._version = version
        return self._db


class Models:
    """The page's models, loaded once; the page is served while they load and says so.

    BLIP and CLAP's text tower are loaded by load(); CLAP's audio tower only when music is first added, since
    nothing else on the page needs it.
    """

    def __init__(self, blip_model: str, clap_model: str, precision: str):
        self.blip_model, self.clap_model, self.precision = blip_model, clap_model, precision
        self.blip = self.clap = None
        self.error: Exception | None = None
        self.ready = threading.Event()

    def load(self) -> None:
        from image_to_vector import neutral_mood_scores
        from music_mood.models import load_blip, load_clap_text

        try:
            self.blip = load_blip(self.blip_model, self.precision)
            self.clap = load_clap_text(self.clap_model, self.precision)
            neutral_mood_scores(self.blip)  # read from the cache, or computed now rather than in the first request
        except ModelLoadError as e:
            self.error = e
        finally:
            self.ready.set()

    def status(self) -> str:
        if not self.ready.is_set():
            return "Loading the models (once, at start): recommendations start as soon as they are ready."
        return f"Models could not be loaded: {self.error}" if self.error else ""

    def query_models(self):
        """(blip, clap text model), waiting for them if they are still loading."""
        import gradio as gr

        self.ready.wait()
        if self.error:
            raise gr.Error(f"The models could not be loaded: {self.error}")
        return self.blip, self.clap

    def audio_model(self):
        """CLAP's audio tower, loaded after load() has finished: transformers models loaded by two threads at
        once break each other (an upload during start-up killed the app)."""
        from music_mood.models import load_clap_audio

        self.ready.wait()
        return load_clap_audio(self.clap_model, self.precision)


# ---------------------------------------------------------------------------------------------- rendering


def audio_url(file_path: str, start_s: float | None = None) -> str:
    """The URL the page plays a track from, by its file_path; `#t=` makes the browser start at `start_s` seconds."""
    url = TRACK_ROUTE + quote(file_path)
    return url if start_s is None else f"{url}#t={start_s:g}"


def render_tracks(result: dict) -> str:
    """The ranked tracks as HTML, each with its own player starting at its best moment; all text escaped."""
    results = result.get("results") or []
    if not results:
        return "<p>No recommendations yet: drop in a photo (or type some words and press Recommend).</p>"
    items = []
    for track in results:
        start = track.get("best_segment_start_s")
        url = track["audio_url"] + ("" if start is None else f"#t={start:g}")
        best = "" if start is None else f" · best moment {format_duration(start)}"
        by = f" — {html.escape(track['artist'])}" if track.get("artist") else ""
        # The top track downloads at once so it plays without a wait; the others fetch only their length.
        preload = "auto" if track["rank"] == 1 else "metadata"
        items.append(
            f'<li class="track" data-rank="{track["rank"]}" data-file="{html.escape(track["file_path"])}" '
            f'data-best-start="{"" if start is None else f"{start:g}"}">'
            f'<span class="rank">{track["rank"]}.</span><b class="title">{html.escape(track["title"])}</b>{by}'
            f'<div class="meta">mood: {html.escape(track.get("mood") or "–")} · genre: '
            f'{html.escape(track.get("genre") or "–")} · score {track["score"]:.3f}{best}</div>'
            f'<audio controls preload="{preload}" src="{html.escape(url)}"></audio></li>'
        )
    return f'<ol class="tracks">{"".join(items)}</ol>'


def render_analysis(result: dict) -> tuple[str, str, str, str]:
    """caption, mood words, query text and the tracks' HTML, for the page's output components."""
    return (result.get("caption", ""), ", ".join(result.get("mood_words", [])), result.get("query_text", ""),
            render_tracks(result))


def library_rows(db: Database) -> list[list]:
    """The Library tab's table: number, the tag columns, length and file of every track."""
    return [[i, *track_tags(t), format_duration(float(t.get("duration_s", 0) or 0)), str(t["file_path"])]
            for i, t in enumerate(db.tracks, 1)]


def tag_choices(db: Database, key: str) -> list[str]:
    """The distinct non-empty values of one tag in the library, sorted case-insensitively."""
    return sorted({str(t.get(key, "")).strip() for t in db.tracks} - {""}, key=str.lower)


# ---------------------------------------------------------------------------------------------- handlers


def recommend_photo(library: Library, blip, clap, image, text: str = "", topk: int = 10, moods=None,
                    genres=None) -> dict:
    """The /recommend endpoint: Recommendation.to_dict() plus each track's audio_url on this server.

    Raises gr.Error with a message for the user for anything the user can fix; the server keeps serving.
    """
    import gradio as gr

    text = (text or "").strip()
    if image is None and not text:
        raise gr.Error("Upload a photo (or type some words) first.")
    try:
        db = library.current()  # one version of the library for the whole request
        rec = recommend(blip, clap, db, image=image, text=text, topk=int(topk), moods=moods or None,
                        genres=genres or None)
    except ImageError as e:
        # The message names the upload's temporary path on the server; the user knows it by its file name.
        message = str(e).replace(str(image), Path(str(image)).name) if isinstance(image, str) else str(e)
        raise gr.Error(f"That file is not a photo we can read: {message}.") from e
    except EmptyLibraryError as e:
        raise gr.Error(str(e)) from e
    except DatabaseError as e:
        raise gr.Error(f"The music database cannot be used: {e}") from e
    result = rec.to_dict()
    for track in result["results"]:
        track["audio_url"] = audio_url(track["file_path"])
    return result


def _upload_name(name: str) -> str:
    """The upload's own name, in any script the file system takes, made unable to name a folder or a hidden file:
    folders (either slash) and leading dots go, and NUL and control characters, which no file name needs."""
    name = re.split(r"[/\\]", name)[-1]
    return "".join(c for c in name if unicodedata.category(c) != "Cc").lstrip(".") or "upload"


def _mood_folder(mood: str) -> str:
    """The one folder level under new_music/ that becomes a track's mood; never a path."""
    mood = re.sub(r"[^\w -]", "", (mood or "").strip()).strip()
    return mood.lower()


def add_music(library: Library, clap_audio, files, mood: str = "", progress=None) -> tuple[dict, list[str]]:
    """Copy uploaded audio files into new_music/[mood/] and embed them with the shared builder, which commits them.

    Returns ({"added": their file_paths, "failed": how many failed, "not_added": how many of them were not
    added}, one line for the user per file that was not added, and why). Only the copies this call made are
    removed again when they fail or are already in the library; any other file the builder reports (a user's
    file in processed_music/) is named and left alone.
    """
    paths = library.paths
    folder = paths.new_music / _mood_folder(mood) if _mood_folder(mood) else paths.new_music
    problems, copies = [], {}  # the copy in new_music/ -> the upload's name
    made_folder = folder != paths.new_music and not folder.exists()
    for source in files or []:
        source = Path(source)
        name = _upload_name(source.name)
        if Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
            problems.append(f"{name}: not an audio file (the library takes {', '.join(AUDIO_EXTENSIONS)})")
            continue
        target, n = folder / name, 2
        while target.exists():
            target = target.with_name(f"{Path(name).stem} ({n}){Path(name).suffix}")
            n += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source, target)
        except FileNotFoundError:  # the same file uploaded twice at once: the first request took it
            problems.append(f"{name}: the uploaded file is gone from the server; upload it again")
            continue
        copies[target] = name
    if not copies:
        _discard_copies([], folder if made_folder else None)
        return {"added": [], "failed": 0, "not_added": len(problems)}, problems
    if progress is not None:
        progress(0, desc=f"Embedding {len(copies)} file(s)")
    try:
        report = build_library(clap_audio, paths, files=list(copies), lock_timeout=10, progress=progress is not None)
    except (DatabaseError, LibraryBusyError):
        _discard_copies(copies, folder if made_folder else None)
        raise
    others, failed = [], 0
    for source, reason in report.failed:
        if source in copies:
            problems.append(f"{copies[source]}: {reason}")
            failed += 1
        else:
            others.append(f"{_library_name(paths, source)}: {reason} (not part of this upload; left where it is)")
    for source, listed_as in report.duplicates:
        if source in copies:
            problems.append(f"{copies[source]}: already in the library as {listed_as}")
        else:
            others.append(f"{_library_name(paths, source)}: already in the library as {listed_as} (not part of "
                          f"this upload; left where it is)")
    _discard_copies([source for source, _ in report.failed + report.duplicates if source in copies],
                    folder if made_folder else None)
    result = {"added": [r["file_path"] for r in report.added], "failed": failed, "not_added": len(problems)}
    return result, problems + others


def _discard_copies(copies, made_folder: Path | None = None) -> None:
    """Remove copies this request made in new_music/ and that were not added: they would only fail again.

    `made_folder`, the mood folder this request created, goes too if that leaves it empty; rmdir refuses a
    folder holding anything, so a file put there meanwhile keeps it.
    """
    for copy in copies:
        copy.unlink(missing_ok=True)
    if made_folder is not None:
        try:
            made_folder.rmdir()
        except OSError:  # not empty (or already gone): nothing of ours to remove
            pass


def _library_name(paths: LibraryPaths, path: Path) -> str:
    """`path` as the user knows it: relative to the library folder when it is inside it."""
    return path.relative_to(paths.root).as_posix() if path.is_relative_to(paths.root) else str(path)


def upload_status(result: dict, problems: list[str], tracks: int) -> str:
    """The Library tab's status after an upload, as Markdown: the counts, then every file not added and why,
    so the /add_music reply carries the reasons and not only the page's warnings."""
    skipped = f"; {result['not_added']} not added" if result["not_added"] else ""
    status = f"Added {len(result['added'])} track(s){skipped}; the library holds {tracks}."
    if problems:
        status += "\n\n" + "\n".join(f"- {_markdown_text(problem)}" for problem in problems)
    return status


def _markdown_text(text: str) -> str:
    """`text` shown as written in Markdown: a file name may hold *, _, [ or <."""
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", text)


def unreadable_photo_message(name: str, error: Exception) -> str:
    """What the page says about an upload Pillow could not open: why, in words, never an exception's class."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(error, FileNotFoundError):
        return f"{name} is no longer on the server (uploads are kept for an hour); drop the photo in again."
    if isinstance(error, UnidentifiedImageError):
        why = "its format is not one of the picture formats we know"
    elif isinstance(error, Image.DecompressionBombError):
        why = "it has too many pixels to open safely"
    else:
        why = "it is damaged or cut short"
    return f"{name} is not an image we can read: {why}. Upload a JPEG, PNG, WebP or similar photo."


def upload_paths(payload) -> list[str]:
    """The uploads component's preprocess: the uploaded files' paths, for add_music to check and copy.

    Gradio's own makes an empty temporary file per upload that nothing removes, and refuses a file of another
    type with an error where add_music names that file among the others instead.
    """
    if payload is None:
        return []
    return [file.path for file in getattr(payload, "root", [payload])]  # ListFiles, or one FileData


def discard_uploads(files, upload_dir: Path, keep: set[str]) -> None:
    """Remove uploaded files the page no longer needs, and the folder Gradio made for each once it is empty.

    Only files inside Gradio's upload folder are touched, and never one in `keep`: Gradio's copy of an example
    photo is the very file an upload of the same photo lands in.
    """
    upload_dir = upload_dir.resolve()
    for file in files:
        path = Path(file)
        if str(path) in keep or not path.resolve().is_relative_to(upload_dir):
            continue
        path.unlink(missing_ok=True)
        if path.parent.resolve() != upload_dir:
            try:
                path.parent.rmdir()
            except OSError:  # another upload with the same content is still in it
                pass


def logged_as_one_line(handler):
    """`handler` with the gr.Error it raises logged as one line on stderr instead of Gradio's full traceback.

    gr.Error is the page's answer to something the user can fix (no photo, a filter matching nothing, a file
    that is not audio): a traceback would bury the real faults, which still get theirs.
    """
    import gradio as gr

    @functools.wraps(handler)  # Gradio reads the handler's parameters (gr.Progress) through the wrapper
    def logged(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error as e:
            e.print_exception = False
            print("User error: " + " ".join(str(e.message).split()), file=sys.stderr)
            raise

    return logged


# ---------------------------------------------------------------------------------------------- the page


def build_app(library: Library, models: Models):
    """The Gradio Blocks of the page; `models` may still be loading when it is served."""
    import gradio as gr

    def photo_input(**kwargs):
        """gr.Image that answers a file Pillow cannot open with a message, not a bare "Error".

        The check wraps this one instance: subclassing gr.Image would make Gradio write app.pyi beside app.py.
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

    def on_recommend(image, text, topk, moods, genres):
        blip, clap = models.query_models()
        try:
            return recommend_photo(library, blip, clap, image, text, topk, moods, genres)
        finally:
            release_freed_memory()  # a query's activations, ~200 MB, would otherwise stay in the server's RSS

    def on_photo(image, text, topk, moods, genres):
        """A new photo (upload, webcam, paste, example) is answered at once; clearing it changes nothing."""
        if image is None:
            return gr.skip()
        return on_recommend(image, text, topk, moods, genres)

    def on_add_music(files, mood, progress=gr.Progress(track_tqdm=True)):
        if not files:
            raise gr.Error("Choose one or more audio files first.")
        try:
            result, problems = add_music(library, models.audio_model(), files, mood, progress)
        except (DatabaseError, LibraryBusyError, ModelLoadError) as e:
            raise gr.Error(str(e)) from e
        finally:
            discard(files)  # copied into new_music/, or refused: the page clears them from the form anyway
        for problem in problems:
            gr.Warning(problem)
        db = current_library()
        return (*library_outputs(db), upload_status(result, problems, len(db)), None)

    def discard(files):
        keep = {str(p) for block in demo.blocks.values() for p in getattr(block, "keep_in_cache", ())}
        discard_uploads(files, Path(demo.GRADIO_CACHE), keep)

    def current_library() -> Database:
        try:
            return library.current()
        except DatabaseError as e:
            raise gr.Error(f"The music database cannot be used: {e}") from e

    def library_outputs(db):
        return (gr.update(choices=tag_choices(db, "mood")), gr.update(choices=tag_choices(db, "genre")),
                library_rows(db))

    def on_load():
        """Every page shows the library as it is when it opens, not as it was when the server started."""
        db = current_library()
        return (*library_outputs(db), f"The library holds {len(db)} track(s).")

    def on_tick():
        """Shows the models' state until they are loaded, then stops polling."""
        return gr.update(value=models.status(), visible=bool(models.status())), gr.Timer(active=not models.ready.is_set())

    # Gradio removes the uploads it keeps (photos, which the page may ask about again) after UPLOAD_KEEP_S, and
    # all of them when the server stops; audio uploads are removed by on_add_music as soon as they are copied.
    with gr.Blocks(title="Music for a photo", analytics_enabled=False,
                   delete_cache=(UPLOAD_SWEEP_S, UPLOAD_KEEP_S)) as demo:
        gr.Markdown("# Music for a photo\nUpload a photo: it is captioned, given mood words, and matched against "
                    "your music library. Each track plays from its best-matching moment.")
        model_status = gr.Markdown(models.status(), visible=bool(models.status()), elem_id="model-status")
        model_timer = gr.Timer(1.0, active=not models.ready.is_set())
        with gr.Tab("Recommend"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = photo_input(label="Photo", type="filepath", image_mode=None,
                                        sources=["upload", "webcam", "clipboard"], elem_id="photo")
                    text = gr.Textbox("", label="Words (optional)", placeholder="rainy night, jazz", elem_id="text")
                    topk = gr.Slider(1, TOPK_MAX, value=10, step=1, label="How many tracks", elem_id="topk")
                    moods = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                        label="Only these moods", elem_id="moods")
                    genres = gr.Dropdown([], value=[], multiselect=True,
                                         allow_custom_value=True, label="Only these genres", elem_id="genres")
                    button = gr.Button("Recommend", variant="primary", elem_id="recommend")
                    examples = [[str(EXAMPLES / name)] for name in EXAMPLE_PHOTOS if (EXAMPLES / name).exists()]
                    if examples:
                        gr.Examples(examples, inputs=[image], label="Example photos")
                with gr.Column(scale=2):
                    caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption")
                    mood_words = gr.Textbox(label="Mood words", interactive=False, elem_id="mood-words")
                    query_text = gr.Textbox(label="Query text (exactly what CLAP embeds)", interactive=False,
                                            elem_id="query-text")
                    tracks = gr.HTML(render_tracks({}), elem_id="tracks")
                    with gr.Accordion("As JSON (what the /recommend API returns)", open=False):
                        result = gr.JSON(label="Recommendation", elem_id="result")
        with gr.Tab("Library"):
            gr.Markdown("Add audio files: they are embedded with the same code as `python music_to_vector.py`, "
                        "moved to `processed_music/`, and recommendable at once.")
            with gr.Row():
                uploads = gr.File(label="Audio files", file_count="multiple", type="filepath",
                                  file_types=list(AUDIO_EXTENSIONS), elem_id="uploads")
                uploads.preprocess = upload_paths
                with gr.Column():
                    mood_folder = gr.Textbox(label="Mood of these files (optional)", placeholder="calm",
                                             elem_id="upload-mood")
                    add = gr.Button("Add to library", variant="primary", elem_id="add-music")
                    status = gr.Markdown("", elem_id="library-status")
            table = gr.Dataframe([], headers=LIBRARY_COLUMNS, interactive=False, elem_id="library")

        def answer(event, handler, **api):
            """Run `handler` on the query inputs when `event` fires, then show its result."""
            event(handler, inputs=[image, text, topk, moods, genres], outputs=result, concurrency_id="models",
                  **api).success(render_analysis, inputs=result, outputs=[caption, mood_words, query_text, tracks],
                                 api_visibility="private", queue=False)

        answer(button.click, logged_as_one_line(on_recommend), api_name="recommend")
        # Dropping in a photo is asking for its music; the button then re-asks with other words, top-k or
        # filters, which is quick because the photo's caption and mood words are remembered.
        answer(image.change, logged_as_one_line(on_photo), api_visibility="private")
        add.click(logged_as_one_line(on_add_music), inputs=[uploads, mood_folder],
                  outputs=[moods, genres, table, status, uploads], api_name="add_music", concurrency_id="models")
        demo.load(logged_as_one_line(on_load), outputs=[moods, genres, table, status], api_visibility="private",
                  queue=False)
        demo.load(on_tick, outputs=[model_status, model_timer], api_visibility="private", queue=False)
        model_timer.tick(on_tick, outputs=[model_status, model_timer], api_visibility="private", queue=False)
    # One model call at a time (they use every core anyway), and a bounded wait line.
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return demo


# ---------------------------------------------------------------------------------------------- serving audio


def track_response(library: Library, file_path: str):
    """GET /track/<file_path>: the audio of one track of the library as it is now, decided per request.

    403 for anything that is not a track (the database, a note dropped into processed_music/, the rest of the
    disk), 404 for a listed track whose file is gone. Starlette's FileResponse answers Range requests (206),
    which players use to start at a track's best moment.
    """
    from starlette.responses import FileResponse, PlainTextResponse

    try:
        path = library.track_file(file_path)
    except DatabaseError as e:
        return PlainTextResponse(f"The music database cannot be used: {e}", status_code=503)
    if path is None:
        return PlainTextResponse("Not a track of this library.", status_code=403)
    try:
        found = os.stat(path)  # through a symlink: the track's audio, wherever it is kept
    except OSError:
        found = None
    if found is None or not stat.S_ISREG(found.st_mode):
        return PlainTextResponse("This track's file is missing from the library folder.", status_code=404)
    return FileResponse(path, stat_result=found)


def track_routes(library: Library) -> list:
    """The server's route for the library's audio, in place of Gradio's file route, whose allowed and blocked
    paths are fixed at launch and so could not follow the library as it changes."""
    from starlette.routing import Route

    def endpoint(request):
        return track_response(library, request.path_params["file_path"])

    return [Route(TRACK_ROUTE + "{file_path:path}", endpoint, methods=["GET"])]  # HEAD is answered too


# ---------------------------------------------------------------------------------------------- start-up


def prepare_library(paths: LibraryPaths, clap_model: str, precision: str) -> None:
    """Before serving: add whatever waits in new_music/ (or unlisted in processed_music/); if the library has
    nothing at all, import the bundled sample tracks first. Progress goes to stderr."""
    db = load_database(paths)
    pending = pending_files(paths, db)
    if not len(db) and not pending:
        print(f"The library is empty: importing the sample tracks of {SAMPLE_PACKAGE}.", file=sys.stderr)
        try:
            pending = import_sample_library(paths)
        except RuntimeError as e:
            print(f"Warning: {e}; serving an empty library (add music in the Library tab).", file=sys.stderr)
            return
    if not pending:
        return
    from music_mood.models import load_clap_audio

    print(f"Adding {len(pending)} audio file(s) to the library in {paths.root}.", file=sys.stderr)
    report = build_library(load_clap_audio(clap_model, precision), paths, progress=True)
    for line in report.problem_lines():
        print(line, file=sys.stderr)
    print(f"{len(report.added)} added, {len(report.failed)} failed, {len(report.duplicates)} already there.",
          file=sys.stderr)


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on host:port. Asked before the start-up work, which can take minutes,
    and so that the user reads which flag to change rather than Gradio's advice to edit launch()."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror:
        return False  # not a port question: launch() reports the address
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def port_busy_message(port: int) -> str:
    return f"port {port} is in use (another app.py?); pass --port, e.g. --port {port + 1 if port < 65535 else port - 1}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="Serve the web page: upload a photo, hear the music of your library that fits it.",
        formatter_class=HelpFormatter,
        epilog="example: python app.py --port 8080   (then open http://127.0.0.1:8080)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on; 0.0.0.0 opens the page to your network")
    parser.add_argument("--port", type=int_argument(1, 65535, "a port number"), default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument("--share", action="store_true",
                        help="also publish the page through a public gradio.live link (anyone with it can use it)")
    add_library_arguments(parser)
    add_model_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    paths = LibraryPaths.at(args.library, args.vectors, args.meta)
    if port_in_use(args.host, args.port):
        print(f"Error: {port_busy_message(args.port)}", file=sys.stderr)
        return 1
    try:
        prepare_library(paths, args.clap_model, args.precision)
        library = Library(paths, args.clap_model)
    except (DatabaseError, ModelLoadError, LibraryBusyError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    paths.processed_music.mkdir(parents=True, exist_ok=True)
    models = Models(args.blip_model, args.clap_model, args.precision)
    demo = build_app(library, models)
    try:
        # No allowed_paths: Gradio serves nothing of the library; its audio goes through track_routes alone.
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
                    app_kwargs={"routes": track_routes(library)}, max_file_size=MAX_UPLOAD, css=CSS,
                    ssr_mode=False, quiet=True)
    except OSError:  # Gradio's message tells to edit launch(); the user has flags
        reason = (port_busy_message(args.port) if port_in_use(args.host, args.port) else
                  f"cannot listen on {args.host}:{args.port}; check --host and --port")
        print(f"Error: {reason}", file=sys.stderr)
        return 1
    # Gradio's own banner would tell users to edit launch(); this one names the flags.
    print(f"Serving at {demo.local_url}" + (f" and {demo.share_url}" if demo.share_url else
                                            " (this machine only; --host 0.0.0.0 or --share to open it)"),
          file=sys.stderr)
    # A stop request (kill, a service manager) closes the server as Ctrl-C does, so that Gradio's shutdown
    # removes the uploads it still keeps instead of leaving them in its temp folder.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # Loaded while the page is up, so a visitor sees that it is loading rather than no page at all.
        print(f"Loading models: {args.blip_model}, {args.clap_model} ({args.precision})...", file=sys.stderr)
        models.load()
        if models.error:
            print(f"Error: {models.error}", file=sys.stderr)
            return 1
        tracks = len(library.current())
        print(f"Models loaded; {tracks} tracks in {paths.root}.", file=sys.stderr)
        if not tracks:
            print(f"Warning: {EMPTY_LIBRARY}", file=sys.stderr)
        threading.Event().wait()  # serve until interrupted
    except KeyboardInterrupt:
        print("Stopping the server.", file=sys.stderr)
    finally:
        demo.close(verbose=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
