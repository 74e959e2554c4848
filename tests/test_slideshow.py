"""The Slideshow tab's work, in this process: a soundtrack planned and rendered into a folder of its own, stopped
mid-way without leaving a file, the folders and what is served from them, the page's HTML and its messages."""
from __future__ import annotations

import json
import re
from pathlib import Path

import av
import pytest

from music_mood.audio import decode_stretches
from music_mood.database import DatabaseError, empty_database
from music_mood.engines import ModelChoice
from music_mood.library import LibraryPaths, load_database
from music_mood.loudness import DEFAULT_LOUDNESS_LUFS, TRUE_PEAK_DBTP, integrated_loudness, true_peak_dbtp
from music_mood.models import ModelStopped, stoppable
from music_mood.render import RenderCancelled
from music_mood.search import Filters
from music_mood.serve import RENDER_TYPES, RenderFolders
from music_mood.slideshows import (
    SLIDESHOW_FILES,
    THUMBNAILS,
    make_slideshow,
    next_best_slideshow,
    skipped_photos,
    slideshow_answer,
)
from music_mood.soundtrack import Plan, plan_soundtrack, replace_scene_track

ALBUM = ("coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png")


def library_state(library: Path) -> dict[str, bytes]:
    return {p.relative_to(library).as_posix(): p.read_bytes() for p in sorted(library.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def folders_in(renders: RenderFolders) -> list[Path]:
    return sorted(renders.root.iterdir())


def test_a_soundtrack_is_planned_once_and_rendered_into_its_own_folder(library_copy, default_models, photos,
                                                                     tmp_path):
    from music_mood.web.views import render_slideshow

    db = load_database(LibraryPaths.at(library_copy))
    album = [str(photos[name]) for name in ALBUM]
    before = library_state(library_copy)
    renders = RenderFolders(tmp_path)
    steps = []
    slideshow = make_slideshow(renders, *default_models, db, album, 3.0, "road trip", on_progress=lambda f, t:
                               steps.append((f, t)))
    expected = plan_soundtrack(*default_models, db, album, seconds_per_photo=3.0, text="road trip", progress=False)
    assert slideshow.plan == expected and slideshow.filters == Filters()

    folder = renders.folder(slideshow.token)
    assert folders_in(renders) == [folder] and folder.parent == renders.root
    assert sorted(p.name for p in folder.iterdir()) == sorted([*SLIDESHOW_FILES.values(), THUMBNAILS])
    assert json.loads((folder / "plan.json").read_text()) == expected.to_served_dict()  # no path of the server
    with av.open(str(folder / "slideshow.mp4")) as video:
        assert video.duration / 1e6 == pytest.approx(expected.total_s, abs=0.1)  # on the beat: within one of 15 s
    assert abs(expected.total_s - len(ALBUM) * 3.0) <= 0.5
    assert len(list((folder / THUMBNAILS).glob("*.jpg"))) == len(ALBUM)
    # The page's soundtrack is as loud as the command line's without --loudness: -14 LUFS, under -1 dBTP.
    (sound,) = decode_stretches(folder / "soundtrack.m4a", [(0.0, len(ALBUM) * 3.0 + 1.0)], 44100)
    assert expected.loudness_lufs == DEFAULT_LOUDNESS_LUFS == -14.0
    assert abs(integrated_loudness(sound, 44100) - DEFAULT_LOUDNESS_LUFS) <= 1.0
    assert true_peak_dbtp(sound) <= TRUE_PEAK_DBTP
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert {t for _, t in steps} >= {"Mixing audio", "Rendering video"}
    assert library_state(library_copy) == before  # rendering never changes the library

    answer = slideshow_answer(slideshow, db)
    base = f"/slideshow/{slideshow.token}/"
    page = render_slideshow(answer)
    assert page.count("<video") == 1 and f'src="{base}slideshow.mp4"' in page
    assert page.count('class="scene"') == len(expected.scenes) and page.count("<figure>") == len(ALBUM)
    assert page.count('class="next-best"') == len(expected.scenes)
    assert answer["files"] == {kind: base + name for kind, name in SLIDESHOW_FILES.items()}
    assert [p["thumbnail_url"] for p in answer["photos"]] == [f"{base}thumbs/{i:03d}.jpg" for i in range(5)]
    for path in [*answer["files"].values(), *(p["thumbnail_url"] for p in answer["photos"])]:
        token, name = path.removeprefix("/slideshow/").split("/", 1)
        assert renders.file(token, name) == folder / name
    plan = expected.to_served_dict()
    assert "library_root" not in plan and all("path" not in p for p in plan["photos"])
    assert answer["photos"] == [{**p, "thumbnail_url": f"{base}thumbs/{i:03d}.jpg"}
                                for i, p in enumerate(plan["photos"])]
    assert [{**scene, "pieces": [{k: v for k, v in piece.items() if k != "audio_url"} for piece in scene["pieces"]]}
            for scene in answer["scenes"]] == plan["scenes"]
    assert answer["skipped_photos"] == []
    assert {k: v for k, v in answer.items() if k not in ("files", "photos", "scenes")} == \
        {k: v for k, v in plan.items() if k not in ("photos", "scenes")}
    ids = {t["file_path"]: t["id"] for t in db.tracks}
    assert all(piece["audio_url"] == "/track/" + ids[piece["file_path"]]
               for scene in answer["scenes"] for piece in scene["pieces"])
    gone = slideshow_answer(slideshow, empty_database(db.root))  # its tracks removed since
    assert {piece["audio_url"] for scene in gone["scenes"] for piece in scene["pieces"]} == {"/track/"}


def test_the_next_best_keeps_the_photos_and_the_thumbnails(library_copy, default_models, photos, tmp_path):
    db = load_database(LibraryPaths.at(library_copy))
    renders = RenderFolders(tmp_path)
    first = make_slideshow(renders, *default_models, db, [str(photos[name]) for name in ALBUM[:3]], 4.0,
                           filters=Filters(moods=["calm", "happy", "tender", "nostalgic", "energetic"]))
    again = next_best_slideshow(renders, db, first, 0)
    assert again.plan == replace_scene_track(db, first.plan, 0)
    assert again.token != first.token and again.filters == first.filters == Filters(moods=["calm", "happy", "tender",
                                                                                           "nostalgic", "energetic"])
    old, new = renders.folder(first.token), renders.folder(again.token)
    for name in ("000.jpg", "001.jpg", "002.jpg"):  # copied: no photo is opened again
        assert (new / THUMBNAILS / name).read_bytes() == (old / THUMBNAILS / name).read_bytes()
    assert json.loads((new / "plan.json").read_text()) == again.plan.to_served_dict()


@pytest.mark.parametrize("when", ["describing", "rendering"])
def test_a_stop_leaves_no_folder_and_no_file(library_copy, default_models, photos, tmp_path, when):
    """Cancel while the photos are described (the next model call is refused) or while the video is encoded (the
    next step is): the request's folder, and everything in it, is gone."""
    db = load_database(LibraryPaths.at(library_copy))
    renders = RenderFolders(tmp_path)
    calls, fractions = [0], []

    def should_stop():
        calls[0] += 1
        return calls[0] > 3 if when == "describing" else bool(fractions) and fractions[-1] > 0.3

    album = [str(photos[name]) for name in ALBUM]
    with pytest.raises(ModelStopped if when == "describing" else RenderCancelled):
        make_slideshow(renders, *default_models, db, album, 4.0, on_progress=lambda f, t: fractions.append(f),
                       should_stop=should_stop)
    assert folders_in(renders) == []
    assert (calls[0] == 4 and not fractions) if when == "describing" else 0.3 < fractions[-1] < 1.0


def test_a_stoppable_model_refuses_calls_once_stopped_and_shares_its_memory(default_models, photos):
    from music_mood.describe import describe_image, memory_of
    from music_mood.images import open_image

    blip = default_models[0]
    stop = [False]
    wrapped = stoppable(blip, lambda: stop[0])
    image = open_image(photos["rocket.jpg"])
    assert describe_image(wrapped, image) == describe_image(blip, image)
    assert memory_of(wrapped) is memory_of(blip)
    assert wrapped.runtime.image_size == blip.runtime.image_size  # attributes as they are
    stop[0] = True
    pixels = blip.runtime.pixel_values(image)
    with pytest.raises(ModelStopped, match="stopped before image_features"):
        wrapped.runtime.image_features(pixels)


def test_render_folders_serve_only_their_own_files(tmp_path):
    renders = RenderFolders(tmp_path / "renders")
    (tmp_path / "renders").mkdir()
    assert renders.folder("x" * 32) is None and not list((tmp_path / "renders").iterdir())  # made on first use
    token, folder = renders.new()
    (folder / "thumbs").mkdir()
    for name in ("slideshow.mp4", "plan.json", "thumbs/000.jpg", "notes.txt", ".hidden.json"):
        (folder / name).write_bytes(b"x")
    (folder / "link.json").symlink_to(folder / "plan.json")
    other, _ = renders.new()
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token) and token != other
    assert renders.file(token, "slideshow.mp4") == folder / "slideshow.mp4"
    assert renders.file(token, "thumbs/000.jpg") == folder / "thumbs" / "000.jpg"
    for name in ("notes.txt", ".hidden.json", "link.json", "../" + other, "thumbs/../plan.json", "/etc/passwd",
                 "thumbs", "missing.mp4", "a/b/c.jpg"):
        assert renders.file(token, name) is None, name
    for bad in ("", "..", "../..", token[:8], "x" * 100, None, 3):
        assert renders.folder(bad) is None
    renders.remove(other)
    assert renders.folder(other) is None and renders.file(token, "plan.json") is not None
    renders.remove("../" + token)  # no path of the caller's choosing is removed
    assert folder.is_dir()
    root = renders.root
    renders.close()
    assert not root.exists() and renders.folder(token) is None
    assert set(RENDER_TYPES) >= {".mp4", ".m4a", ".m3u8", ".json", ".jpg"} | \
        {Path(name).suffix for name in SLIDESHOW_FILES.values()}  # every file the page renders is served


def test_the_page_escapes_what_it_shows_and_plays_each_stretch(tmp_path):
    from music_mood.web.views import render_slideshow

    photo = {"path": "/tmp/x/<b>.jpg", "name": "<b>.jpg", "caption": "a <script>", "mood_words": ["calm"],
             "start_s": 0.0, "end_s": 4.0, "thumbnail_url": "/slideshow/T/thumbs/000.jpg"}
    piece = {"file_path": "processed_music/a&b.opus", "title": "<i>Song</i>", "artist": "A \"B\"", "score": 0.5,
             "track_start_s": 30.0, "track_end_s": 34.0, "start_s": 0.0, "end_s": 4.0,
             "audio_url": "/track/0123456789abcdef"}
    scene = {"index": 0, "photos": [0, 1], "start_s": 0.0, "end_s": 8.0, "mood_words": ["calm"], "query_text": "q<",
             "vector": [1.0], "pieces": [piece, {**piece, "track_start_s": 0.0, "track_end_s": 4.0}],
             "shared_mood_words": ["calm"]}
    answer = {"photos": [photo, {**photo, "name": "two.jpg"}], "scenes": [scene], "tracks_repeat": True,
              "skipped_photos": [{"name": "bad.png", "error": "bad.png is not an image"}],
              "files": {kind: f"/slideshow/T/x.{kind}" for kind in SLIDESHOW_FILES}}
    page = render_slideshow(answer)
    assert "<script>" not in page and "<i>Song</i>" not in page and "&lt;i&gt;Song&lt;/i&gt;" in page
    assert 'src="/track/0123456789abcdef#t=30.00,34.00"' in page
    assert "then <b" in page  # the track that continues the scene
    assert "fewer tracks than this soundtrack needs" in page and "bad.png" in page and "/tmp/x" not in page
    assert page.count('download="') == len(SLIDESHOW_FILES) and "No soundtrack yet" in render_slideshow(None)
    assert 'href="/slideshow/T/x.xml" download="timeline.xml"' in page


def test_messages_name_photos_by_their_file_name(library_copy, default_models, tmp_path):
    import gradio as gr

    from music_mood.web.errors import user_errors
    from music_mood.web.slideshow_tab import slideshow_photos

    uploads = tmp_path / "gradio" / "abc123"
    uploads.mkdir(parents=True)
    bad, gone = uploads / "notes.png", uploads / "gone.jpg"
    bad.write_text("not a photo")
    db = load_database(LibraryPaths.at(library_copy))
    with pytest.raises(gr.Error) as raised, user_errors([bad, gone], soundtrack=True):
        make_slideshow(RenderFolders(tmp_path / "renders"), *default_models, db, [str(bad), str(gone)])
    assert raised.value.message == ("None of the 2 photos can be read (notes.png is not an image (Pillow cannot "
                                    "identify it), and 1 more).")
    plan = Plan(library_root=str(db.root), seconds_per_photo=4, total_s=8, text="", photos=[], scenes=[],
                skipped_photos=[{"path": str(bad), "error": f"{bad} is not an image (Pillow cannot identify it)"}])
    assert skipped_photos(plan) == [{"name": "notes.png", "error": "notes.png is not an image (Pillow cannot "
                                                                   "identify it)"}]
    for photos, message in (([str(bad)], "Drop in 2 to 60 photos first"),
                            ([str(bad)] * 61, "At most 60 photos make one soundtrack here, not 61")):
        with pytest.raises(gr.Error) as raised:
            slideshow_photos(photos)
        assert raised.value.message.startswith(message)
    with pytest.raises(gr.Error) as raised, user_errors():
        raise DatabaseError("damaged")
    assert raised.value.message == "The music database cannot be used: damaged"


def test_a_session_that_ends_takes_its_soundtrack_with_it(library_copy, checkpoints, tmp_path):
    """Gradio deletes a session's state an hour after it was set (gr.State's time_to_live, as long as the uploaded
    photos are kept); the state's delete_callback then removes the folder of its soundtrack."""
    import gradio as gr

    from music_mood.live import LiveLibrary
    from music_mood.models import BackgroundModels
    from music_mood.slideshows import Slideshow
    from music_mood.web.page import build_app

    renders = RenderFolders(tmp_path)
    demo = build_app(LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"]),
                     BackgroundModels(checkpoints["blip"], checkpoints["clap"], ModelChoice("fp32")), renders)
    (state,) = [block for block in demo.blocks.values() if isinstance(block, gr.State)]
    token, folder = renders.new()
    (folder / "plan.json").write_text("{}")
    plan = Plan(library_root=str(library_copy), seconds_per_photo=4, total_s=8, text="", photos=[], scenes=[])
    state.delete_callback(None)  # a session that made no soundtrack
    state.delete_callback(Slideshow(plan=plan, token=token))
    assert not folder.exists() and state.time_to_live == 3600
