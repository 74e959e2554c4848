"""The Slideshow tab's API through the page served in this process and gradio_client: /soundtrack answers the plan
and serves its files, /next_best_track replaces one scene, bad requests are clear errors, and a cancelled request, a
replaced soundtrack and a stopped server leave no rendered file behind."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from urllib.parse import unquote

import av
import opentimelineio as otio
import pytest

from music_mood.library import LibraryPaths, load_database
from music_mood.soundtrack import MAX_SECONDS_PER_PHOTO, MAX_TOTAL_S, Plan, plan_soundtrack, replace_scene_track
from tests.app_server import (
    file_data,
    foreign_paths,
    get,
    holds_a_copy,
    make_secret,
    path_sending_client,
    running_app,
    serving_app,
    upload,
)
from tests.test_app import library_state

ALBUM = ("coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png")
TYPES = {"mp4": {"video/mp4"}, "m4a": {"audio/mp4", "audio/x-m4a"},
         "m3u8": {"audio/x-mpegurl", "application/vnd.apple.mpegurl"}, "json": {"application/json"},
         "otio": {"application/json"}, "xml": {"application/xml", "text/xml"}, "edl": {"text/plain"},
         "wav": {"audio/wav", "audio/x-wav"}}


@pytest.fixture(scope="module")
def app_library(built_library, tmp_path_factory) -> Path:
    library = tmp_path_factory.mktemp("slideshow-app") / "library"
    shutil.copytree(built_library, library)
    return library


@pytest.fixture(scope="module")
def app(app_library, checkpoints, tmp_path_factory, shared_exports):
    """The page served in this process for the module (app_server.serving_app: started as app.py starts it, its
    renders in work/tmp where TMPDIR put a process's). No test here is about the process itself: what the tab
    answers, serves, refuses, logs (read with capfd) and leaves on disk is the page's, whichever process serves it.
    The last test runs app.py itself, whose stop removes the renders."""
    with serving_app(app_library, checkpoints, tmp_path_factory.mktemp("slideshow-run"),
                     exports=shared_exports) as served:
        yield served


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)


def make(client, album, seconds: float = 4, text: str = "", moods=(), genres=(), beat_sync=True) -> dict:
    from gradio_client import handle_file

    return client.predict(photos=[handle_file(str(p)) for p in album], seconds_per_photo=seconds, text=text,
                          moods=list(moods), genres=list(genres), beat_sync=beat_sync, api_name="/soundtrack")


def plan_of(answer: dict, library: Path, photos: dict | None = None) -> Plan:
    """The plan an answer carries, made from `library` (the answer names no path of the server), without the URLs
    the server adds; each photo's path is its name, or the path of that name in `photos` (the answer names a photo
    only by its file name)."""
    plan = {"library_root": str(library), **{key: value for key, value in answer.items() if key != "files"}}
    plan["photos"] = [{**{k: v for k, v in photo.items() if k != "thumbnail_url"},
                       "path": str((photos or {}).get(photo["name"], photo["name"]))} for photo in plan["photos"]]
    plan["skipped_photos"] = [{"path": s["name"], "error": s["error"]} for s in plan["skipped_photos"]]
    plan["scenes"] = [{**scene, "pieces": [{k: v for k, v in piece.items() if k != "audio_url"}
                                           for piece in scene["pieces"]]} for scene in plan["scenes"]]
    return Plan.from_dict(plan)


def served(app, answer: dict) -> dict[str, int]:
    """The status of each rendered file's URL."""
    return {kind: get(app, url).status for kind, url in answer["files"].items()}


def render_folders(work: Path) -> list[Path]:
    """The render folders of the app (under its TMPDIR): one per soundtrack kept."""
    return sorted(p for root in (work / "tmp").glob("music-mood-renders-*") for p in root.iterdir())


def test_soundtrack_api_answers_the_plan_and_serves_its_files(app, client, app_library, default_models, photos,
                                                             tmp_path):
    album = [photos[name] for name in ALBUM]
    before = library_state(app_library)
    answer = make(client, album, seconds=4, text="summer")
    db = load_database(LibraryPaths.at(app_library))
    expected = plan_soundtrack(*default_models, db, album, seconds_per_photo=4.0, text="summer", progress=False)
    # The same plan as plan_soundtrack makes here, from the server's copies of the photos (same names).
    plan = plan_of(answer, app_library, photos)
    assert [photo.name for photo in plan.photos] == list(ALBUM)
    assert plan == expected and abs(plan.total_s - 20.0) <= 0.5 and plan.beat_sync  # on the beat: within one
    assert all(set(photo) == {"name", "caption", "mood_words", "start_s", "end_s", "thumbnail_url"}
               for photo in answer["photos"])  # no path: it is the server's temporary copy

    files = {}
    for kind, url in answer["files"].items():
        response = get(app, url)
        assert response.status == 200 and response.getheader("content-type").split(";")[0] in TYPES[kind], kind
        files[kind] = response.body
    (tmp_path / "slideshow.mp4").write_bytes(files["mp4"])
    with av.open(str(tmp_path / "slideshow.mp4")) as video:
        assert [s.type for s in video.streams] == ["video", "audio"]
        assert (video.streams.video[0].width, video.streams.video[0].height) == (1280, 720)
        assert video.duration / 1e6 == pytest.approx(plan.total_s, abs=0.1)
    # The whole plan as the answer carries it: photos by their names, tracks by their paths in the library.
    assert plan_of({**json.loads(files["json"]), "files": {}}, app_library, photos) == expected
    playlist = files["m3u8"].decode()
    assert playlist.startswith("#EXTM3U\n")
    assert [line for line in playlist.splitlines() if not line.startswith("#")] == \
        [piece.file_path for scene in plan.scenes for piece in scene.pieces]
    # The editors' timelines: photos by their names, tracks by their paths in the library, the mixed .wav beside.
    for kind in ("otio", "xml"):
        (tmp_path / f"timeline.{kind}").write_bytes(files[kind])
        photos_track, music, mix = otio.adapters.read_from_file(str(tmp_path / f"timeline.{kind}")).tracks
        assert [clip.media_reference.target_url for clip in photos_track.find_clips()] == list(ALBUM)
        assert [unquote(clip.media_reference.target_url) for clip in music.find_clips()] == \
            [piece.file_path for scene in plan.scenes for piece in scene.pieces]
        assert [clip.media_reference.target_url for clip in mix.find_clips()] == ["timeline.wav"]
    # The video player seeks with Range requests.
    response = get(app, answer["files"]["mp4"], headers={"Range": "bytes=1000-1999"})
    assert response.status == 206 and response.body == files["mp4"][1000:2000]
    for photo in answer["photos"]:
        response = get(app, photo["thumbnail_url"])
        assert response.status == 200 and response.getheader("content-type") == "image/jpeg"
    for scene in answer["scenes"]:
        for piece in scene["pieces"]:
            assert get(app, piece["audio_url"], headers={"Range": "bytes=0-99"}).status == 206
    assert library_state(app_library) == before  # making a soundtrack never changes the library


def test_next_best_track_replaces_one_scene_and_a_new_soundtrack_replaces_the_old(app, client, app_library, photos,
                                                                                   tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    first = make(client, [photos["chelsea.png"], photos["coffee.png"]], seconds=5)
    second = make(client, [photos[name] for name in ALBUM[:3]], seconds=3)
    assert set(served(app, first).values()) == {404}  # the session's older soundtrack is gone
    db = load_database(LibraryPaths.at(app_library))
    plan = plan_of(second, app_library)
    walked = [plan.scenes[0].pieces[0].file_path]
    for _ in range(2):
        again = client.predict(scene_index=0, api_name="/next_best_track")
        expected = replace_scene_track(db, plan, 0)
        assert plan_of(again, app_library) == expected
        assert set(served(app, again).values()) == {200} and set(served(app, second).values()) == {404}
        plan, second = expected, again
        walked.append(plan.scenes[0].pieces[0].file_path)
    assert len(set(walked)) == 3
    (tmp_path / "again.mp4").write_bytes(get(app, again["files"]["mp4"]).body)
    with av.open(str(tmp_path / "again.mp4")) as video:
        assert video.duration / 1e6 == pytest.approx(plan.total_s, abs=0.1)

    with pytest.raises(AppError, match=re.escape("The soundtrack has 1 scene(s), numbered 0 to 0; there is no "
                                                 "scene 3.")):
        client.predict(scene_index=3, api_name="/next_best_track")
    assert set(served(app, again).values()) == {200}  # a refused request changes nothing
    with pytest.raises(AppError, match="Make a soundtrack first"):
        Client(app.url, verbose=False).predict(scene_index=0, api_name="/next_best_track")  # another session


def test_what_the_app_serves_of_a_soundtrack_names_no_path_of_the_server(app, client, app_library, photos):
    """The /soundtrack and /next_best_track answers and every file of the slideshow's folder (the plan, the
    playlist, the video, the soundtrack, the thumbnails) name tracks by their path in the library and photos by
    their file names: never the library's folder, the uploads' folder, the temporary folder or a home."""
    import tempfile

    upload_dir = upload(app, photos["coffee.png"]).rsplit("/", 2)[0]  # Gradio's folder of uploads
    server_paths = {str(app_library), str(app_library.resolve()), upload_dir, str(app.work),
                    str(app.work / "tmp"), tempfile.gettempdir(), "/root", "/tmp", "/home"}
    for ask in (lambda: make(client, [photos[name] for name in ALBUM[:3]], seconds=3),
                lambda: client.predict(scene_index=0, api_name="/next_best_track")):
        answer = ask()  # its files are served until the next one is ready
        folder = answer["files"]["json"].rsplit("/", 1)[0]
        urls = [*answer["files"].values(), *(photo["thumbnail_url"] for photo in answer["photos"])]
        assert f"{folder}/thumbs/000.jpg" in urls
        bodies = {"the answer": json.dumps(answer).encode()}
        for url in urls:
            response = get(app, url)
            assert response.status == 200, url
            bodies[url] = response.body
        for name, body in bodies.items():
            for path in server_paths:
                assert path.encode() not in body, f"{name} names {path}"
        playlist = bodies[answer["files"]["m3u8"]].decode()
        assert [line for line in playlist.splitlines() if not line.startswith("#")] == \
            [piece["file_path"] for scene in answer["scenes"] for piece in scene["pieces"]]
        assert "library_root" not in json.loads(bodies[answer["files"]["json"]]) and "library_root" not in answer


def test_bad_requests_are_one_clear_error_each(client, photos, tmp_path, capfd):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    notes = tmp_path / "notes.png"
    notes.write_text("not a photo")
    answer = make(client, [photos["rocket.jpg"], notes, photos["coffee.png"]])
    assert [photo["name"] for photo in answer["photos"]] == ["rocket.jpg", "coffee.png"]
    assert answer["skipped_photos"] == [{"name": "notes.png",
                                         "error": "notes.png is not an image (Pillow cannot identify it)"}]
    assert abs(answer["total_s"] - 8.0) <= 0.5  # two photos of 4 s, on the beat

    capfd.readouterr()  # the server's stderr is this process's: what it wrote before is not these requests'
    unreadable = "None of the 2 photos can be read (notes.png is not an image (Pillow cannot identify it), and 1 more)."
    for call, message in (
            (dict(photos=[notes, notes]), unreadable),
            (dict(photos=[photos["rocket.jpg"]]), "Drop in 2 to 60 photos first"),
            (dict(photos=[photos["rocket.jpg"]] * 61), "At most 60 photos make one soundtrack here, not 61"),
            (dict(photos=[photos["rocket.jpg"]] * 2, moods=["no such mood"]), "No track in the library has the mood"),
            # Beyond the core's limits (soundtrack.MAX_SECONDS_PER_PHOTO, MAX_TOTAL_S), as a forged request asks:
            (dict(photos=[photos["rocket.jpg"]] * 2, seconds=MAX_SECONDS_PER_PHOTO + 1),
             f"greater than maximum value {MAX_SECONDS_PER_PHOTO}"),
            (dict(photos=[photos["rocket.jpg"]] * 31, seconds=MAX_SECONDS_PER_PHOTO),
             f"31 photos of 60 s would last 1860 s; a soundtrack lasts at most {MAX_TOTAL_S:g} s (30 minutes).")):
        photos_given = [handle_file(str(p)) for p in call.pop("photos")]
        with pytest.raises(AppError) as raised:
            client.predict(photos=photos_given, seconds_per_photo=call.get("seconds", 4), text="",
                           moods=call.get("moods", []), genres=[], api_name="/soundtrack")
        assert message in raised.value.message
        assert "gradio" not in raised.value.message  # the user's file names, not the server's temporary paths
    log = capfd.readouterr().err
    assert "Traceback" not in log and log.count("User error: ") == 6, log


def test_soundtrack_takes_no_photo_but_an_upload(app, photos, tmp_path):
    """A photo named by a path on the server, or by one leading out of the upload folder, is one error for the
    whole request, beside an uploaded photo too: nothing is described, rendered or served."""
    from gradio_client.exceptions import AppError

    secret = make_secret(photos["chelsea.png"], tmp_path / "secret.png")
    upload_dir, client = app.work / "gradio-uploads", path_sending_client(app)
    uploaded = upload(app, photos["coffee.png"])
    renders = render_folders(app.work)
    answers = set()
    for path in foreign_paths(secret, upload_dir):
        for album in ([path, path], [uploaded, path]):
            with pytest.raises(AppError) as refused:
                client.predict(photos=[file_data(p) for p in album], seconds_per_photo=4, text="", moods=[],
                               genres=[], api_name="/soundtrack")
            answers.add(str(refused.value))
    assert answers == {"That is not an uploaded file: send the file itself (upload it), not a path on the server."}
    assert render_folders(app.work) == renders
    assert not holds_a_copy(upload_dir, secret) and not holds_a_copy(app.work / "tmp", secret)
    answer = client.predict(photos=[file_data(uploaded)] * 2, seconds_per_photo=4, text="", moods=[], genres=[],
                            api_name="/soundtrack")  # uploads, sent by their path on the server, are taken
    assert [photo["name"] for photo in answer["photos"]] == ["coffee.png", "coffee.png"]


def test_a_cancel_leaves_no_file_and_a_stopped_server_none_at_all(library_copy, checkpoints, photos, tmp_path,
                                                                 shared_exports):
    """On app.py itself (running_app): its stop is part of the test, and only serve(), which the process runs,
    removes the renders when the server stops."""
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status

    work = tmp_path / "run"
    with running_app(library_copy, checkpoints, work, exports=shared_exports) as app:
        client = Client(app.url, verbose=False)
        kept = make(client, [photos["chelsea.png"], photos["coffee.png"]])
        (folder,) = render_folders(work)
        contents = sorted(p.relative_to(folder) for p in folder.rglob("*"))

        long = [handle_file(str(photos[ALBUM[i % 5]])) for i in range(20)]  # 5 minutes of video
        job = client.submit(photos=long, seconds_per_photo=15, text="", moods=[], genres=[], api_name="/soundtrack")
        deadline = time.monotonic() + 120
        while not any((p.desc or "").startswith("Rendering video") for p in job.status().progress_data or []):
            assert time.monotonic() < deadline and not job.done(), "the render never started"
            time.sleep(0.2)
        assert len(render_folders(work)) == 2  # the cancelled one is being written
        job.cancel()
        deadline = time.monotonic() + 30
        while job.status().code != Status.CANCELLED:
            assert time.monotonic() < deadline, job.status()
            time.sleep(0.2)
        assert render_folders(work) == [folder]  # what it had written is gone, the finished one is whole
        assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == contents
        assert set(served(app, kept).values()) == {200}

        after = make(client, [photos["rocket.jpg"], photos["astronaut.png"]])  # the server goes on
        assert set(served(app, after).values()) == {200} and len(render_folders(work)) == 1
        assert "Traceback" not in app.log_text()
    assert not list((work / "tmp").glob("music-mood-renders-*"))  # the server stopped: all of it removed


def test_the_beat_sync_box_off_keeps_the_exact_clock_and_a_forged_value_is_refused(app, client, photos):
    """The Slideshow tab's "Cut on the beat" box (on by default): off, each photo lasts exactly the seconds asked;
    anything but true or false is one clear error. On, each scene shows its track's tempo and where its stretch
    starts in bars and beats."""
    from gradio_client.exceptions import AppError

    from music_mood.web.views import render_slideshow

    album = [photos[name] for name in ("rocket.jpg", "coffee.png", "chelsea.png")]
    clock = make(client, album, seconds=3, beat_sync=False)
    assert not clock["beat_sync"] and clock["total_s"] == 9.0
    assert [photo["start_s"] for photo in clock["photos"]] == [0.0, 3.0, 6.0]
    synced = make(client, album, seconds=3)
    assert synced["beat_sync"] and abs(synced["total_s"] - 9.0) <= 0.5
    first = synced["scenes"][0]["pieces"][0]
    assert first["start_bar"] >= 1 and 1 <= first["start_beat"] <= 4 and first["tempo_bpm"]
    assert f"BPM, from bar {first['start_bar']} beat {first['start_beat']}" in render_slideshow(synced)
    with pytest.raises(AppError, match="beat_sync is true or false"):
        make(client, album, seconds=3, beat_sync="yes")
