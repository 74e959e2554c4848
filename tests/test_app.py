"""The web app: its /recommend and /add_music API, which files it serves, where it listens, and its errors."""
from __future__ import annotations

import contextlib
import re
import shutil
import socket
from pathlib import Path
from urllib.parse import quote

import pytest

from music_mood.audio import file_sha256, find_audio_files
from music_mood.build import build_library
from music_mood.edit import set_fields
from music_mood.engines import ModelChoice
from music_mood.library import LibraryPaths, load_database
from music_mood.live import LiveLibrary
from music_mood.recommendation import recommend
from music_mood.sample import import_sample_library
from music_mood.search import Filters
from tests.app_server import (
    file_data,
    foreign_paths,
    get,
    holds_a_copy,
    make_secret,
    path_sending_client,
    running_app,
    running_copy,
    serving_app,
)
from tests.conftest import ROOT, put_in_new_music, run_cli


@pytest.fixture(scope="module")
def app_library(built_library, tmp_path_factory) -> Path:
    library = tmp_path_factory.mktemp("app") / "library"
    shutil.copytree(built_library, library)
    # What a real library holds beside its audio in processed_music/: the repo's README, the sample licence.
    (library / "processed_music" / "README.md").write_text("Music that is in the database.\n")
    (library / "processed_music" / "immich-memories-music-LICENSE-MUSIC.txt").write_text("MIT\n")
    return library


@pytest.fixture(scope="module")
def app(app_library, checkpoints, tmp_path_factory, shared_exports):
    """The page served in this process for the module (app_server.serving_app: started as app.py starts it),
    serving a library built from real tracks: its API, the files it serves and refuses, its errors and their
    one-line log (read with capfd) are the page's, whichever process serves it.

    The tests whose point is the process use app_process (see there); the start-up tests that run app.py (run_cli)
    and the SIGTERM tests (running_app, one process per attempt) start theirs, and the browser tests elsewhere too.
    test_uploads_do_not_pile_up_in_the_temp_folder serves a page of its own (serving_app), to close it; that
    app.py's stop closes it is the SIGTERM tests' point.
    """
    with serving_app(app_library, checkpoints, tmp_path_factory.mktemp("app-run"), exports=shared_exports) as served:
        yield served


@pytest.fixture(scope="module")
def app_process(built_library, checkpoints, tmp_path_factory, shared_exports):
    """`python app.py` itself, started with no --host, --precision or --backend, on a copy of the built library, for
    the tests whose point is that process:
    - what it loads (torch or not): read from its own /proc/PID/maps, which the test process, with torch imported
      for the checkpoints, cannot stand in for;
    - that it writes nothing into the source tree when run from a folder of its own;
    - where app.py listens when given no --host (serving_app passes the host itself);
    - what a second app.py says on its busy port (the second is a process run_cli starts; this one holds the port
      as a user's running app would).
    """
    with running_copy(built_library, checkpoints, tmp_path_factory, shared_exports, "app-process") as running:
        yield running


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)


def track_url(track_id: str) -> str:
    """Where the page plays a track: by its record's id, nothing else."""
    return "/track/" + track_id


def path_url(file_path: str) -> str:
    """A forged URL naming a file by its path, as the route took before tracks were served by id."""
    return "/track/" + quote(file_path)


def with_urls(rec) -> dict:
    """A Recommendation as the API answers it: its dict, each track with its URL."""
    result = rec.to_dict()
    for track in result["results"]:
        track["audio_url"] = track_url(track["id"])
    return result


def expected_result(library: Path, blip, clap_text, image, topk: int) -> dict:
    """What /recommend must answer: recommend() on the same library and image, plus each track's URL."""
    return with_urls(recommend(blip, clap_text, load_database(LibraryPaths.at(library)), image=image, topk=topk))


# ---------------------------------------------------------------------------------------------- the API


def test_the_app_loads_torch_only_when_its_backend_is_torch(app_process, photos):
    """Where every stage runs on ONNX Runtime (the default on CPUs without AMX) the server answers without torch in
    memory."""
    from gradio_client import Client, handle_file

    from music_mood.engines import AUTO

    client = Client(app_process.url, verbose=False)
    result = client.predict(image=handle_file(str(photos["coffee.png"])), text="", topk=3, api_name="/recommend")
    assert len(result["results"]) == 3
    with open(f"/proc/{app_process.process.pid}/maps", encoding="utf-8") as f:
        mapped = f.read()
    # What the app chose for the stages it runs: it was given no --precision or --backend.
    backends = {AUTO.engine(stage)[0] for stage in ("blip-vision", "blip-decoder", "clap-text")}
    assert ("libtorch_cpu" in mapped) == ("torch" in backends)
    assert ("onnxruntime" in mapped) == ("onnx" in backends)


def test_recommend_api_answers_what_recommend_answers(app, client, app_library, default_models, photos):
    from gradio_client import handle_file

    for name, topk in (("rocket.jpg", 4), ("chelsea.png", 20)):
        result = client.predict(image=handle_file(str(photos[name])), text="", topk=topk, api_name="/recommend")
        assert result == expected_result(app_library, *default_models, photos[name], topk)
        assert len(result["results"]) == min(topk, len(load_database(LibraryPaths.at(app_library))))
        for track in result["results"]:
            response = get(app, track["audio_url"])
            assert response.status == 200 and response.getheader("content-type").startswith("audio/")


def test_recommend_api_takes_text_and_filters(client, app_library):
    db = load_database(LibraryPaths.at(app_library))
    mood = db.tracks[0]["mood"]
    result = client.predict(image=None, text="slow piano, rain", topk=20, moods=[mood], api_name="/recommend")
    assert result["caption"] == "" and result["query_text"] == "slow piano, rain"
    assert {t["mood"] for t in result["results"]} == {mood}
    assert len(result["results"]) == sum(t["mood"] == mood for t in db.tracks)


def test_recommend_and_more_like_this_take_the_variety_options(client, app_library, default_models):
    """max_per_artist and diversity, the last parameters, reach recommend(); left out they are the CLI's defaults
    (3 per artist, no MMR), so a client written before them gets what it got; values off the sliders are refused."""
    from gradio_client.exceptions import AppError

    paths = LibraryPaths.at(app_library)
    tracks = load_database(paths).tracks
    band = tracks[:4]  # the sample tracks name no artist: four of them get one, for the cap to have work
    set_fields(paths, [(t["id"], "artist", "One Band") for t in band])
    try:
        db = load_database(paths)
        like = band[0]["file_path"]
        for max_per_artist, diversity in ((1, 0.0), (0, 0.0), (2, 0.5), (None, None)):
            options = {} if max_per_artist is None else {"max_per_artist": max_per_artist, "diversity": diversity}
            result = client.predict(image=None, text="slow piano", topk=20, **options, api_name="/recommend")
            assert result == with_urls(recommend(None, default_models[1], db, text="slow piano", topk=20, **options))
            by_band = [t for t in result["results"] if t["artist"] == "One Band"]
            assert len(by_band) == {1: 1, 0: 4, 2: 2, None: 3}[max_per_artist]
            result = client.predict(like=like, topk=20, **options, api_name="/more_like_this")
            assert result == with_urls(recommend(None, None, db, like=like, topk=20, **options))
        for bad in ({"diversity": 1.5}, {"max_per_artist": -1}):
            with pytest.raises(AppError, match=r"(less|greater) than (minimum|maximum) value"):
                client.predict(image=None, text="calm", topk=3, **bad, api_name="/recommend")
    finally:  # the other tests of the module count tracks under the default cap
        set_fields(paths, [(t["id"], "artist", t.get("artist", "")) for t in band])


# ---------------------------------------------------------------------------------------------- files served


def test_app_writes_nothing_into_the_source_tree(app_process):
    assert not (ROOT / "app.pyi").exists()  # Gradio writes one beside any module that subclasses a component


def test_library_audio_is_served_with_ranges(app, app_library):
    """Players seek (to a track's best moment) with Range requests: the answer is the bytes asked for."""
    track = load_database(LibraryPaths.at(app_library)).tracks[0]
    data = (app_library / track["file_path"]).read_bytes()
    response = get(app, track_url(track["id"]))
    assert response.status == 200 and response.getheader("content-type") == "audio/ogg" and response.body == data
    assert get(app, path_url(track["file_path"])).status == 403  # its path names nothing: only its id does
    response = get(app, track_url(track["id"]), headers={"Range": "bytes=1000-1999"})
    assert response.status == 206 and response.body == data[1000:2000]
    assert response.getheader("content-range") == f"bytes 1000-1999/{len(data)}"


def test_files_dropped_into_processed_music_after_start_are_not_served(app, app_library, sample_tracks):
    """What is served is decided per request: a file that is not a track of the library now answers 403."""
    mood = next(p for p in (app_library / "processed_music").iterdir() if p.is_dir())
    notes, unlisted = app_library / "processed_music" / "notes.txt", mood / "not in the database.opus"
    notes.write_text("my notes\n")
    shutil.copyfile(sample_tracks[-2], unlisted)
    try:
        for path in (notes, unlisted):
            assert get(app, "/gradio_api/file=" + quote(str(path))).status == 403
            assert get(app, path_url(path.relative_to(app_library).as_posix())).status == 403
            assert get(app, track_url(file_sha256(path)[:16])).status == 403  # an id, but of no track
    finally:  # an unlisted audio file would be added by the next build
        notes.unlink()
        unlisted.unlink()


def test_symlinked_track_is_served(app, client, app_library, sample_tracks, checkpoints):
    """A track that is a symlink in processed_music/ to a file elsewhere is listed, so its player plays it."""
    mood = next(p for p in (app_library / "processed_music").iterdir() if p.is_dir())
    target = sample_tracks[4]  # outside the library, in the package's folder
    (mood / "linked.opus").symlink_to(target)
    done = run_cli("music_to_vector.py", "--library", app_library, "--clap-model", checkpoints["clap"])
    assert done.returncode == 0, done.stderr
    file_path = f"processed_music/{mood.name}/linked.opus"
    assert file_path in {t["file_path"] for t in load_database(LibraryPaths.at(app_library)).tracks}

    result = client.predict(image=None, text="anything", topk=20, moods=[mood.name], api_name="/recommend")
    linked = next(t for t in result["results"] if t["file_path"] == file_path)
    response = get(app, linked["audio_url"])
    assert response.status == 200 and response.body == target.read_bytes()


# ---------------------------------------------------------------------------------------------- files the API takes


def foreign_path_answers(client, call, secret: Path, upload_dir: Path) -> set[str]:
    """The error message of `call(client, FileData)` for each foreign path to `secret` and each probe."""
    from gradio_client.exceptions import AppError

    answers = set()
    for path in foreign_paths(secret, upload_dir):
        with pytest.raises(AppError) as refused:
            call(client, file_data(path))
        answers.add(str(refused.value))
    return answers


def test_add_music_takes_no_file_but_an_upload(app, app_library, sample_tracks, tmp_path):
    """A path on the server, or one leading out of the upload folder, is one error, however the file is; the
    secret is not copied, added or served."""
    secret = make_secret(sample_tracks[-3], tmp_path / "secret.opus")
    upload_dir = app.work / "gradio-uploads"
    before = library_state(app_library)

    def add(client, file):
        return client.predict(files=[file], mood="", api_name="/add_music")

    answers = foreign_path_answers(path_sending_client(app), add, secret, upload_dir)
    assert answers == {"That is not an uploaded file: send the file itself (upload it), not a path on the server."}
    assert library_state(app_library) == before
    assert not holds_a_copy(app_library, secret) and not holds_a_copy(upload_dir, secret)
    assert get(app, path_url("processed_music/secret.opus")).status == 403
    assert get(app, track_url(file_sha256(secret)[:16])).status == 403


def test_recommend_takes_no_photo_but_an_upload(app, client, photos, tmp_path):
    secret = make_secret(photos["rocket.jpg"], tmp_path / "secret.jpg")
    upload_dir = app.work / "gradio-uploads"

    def ask(client, file):
        return client.predict(image=file, text="", topk=3, api_name="/recommend")

    answers = foreign_path_answers(path_sending_client(app), ask, secret, upload_dir)
    assert answers == {"That is not an uploaded file: send the file itself (upload it), not a path on the server."}
    assert not holds_a_copy(upload_dir, secret)
    from gradio_client import handle_file

    # An upload (the client sends the file) is answered as before.
    assert len(client.predict(image=handle_file(str(secret)), text="", topk=3, api_name="/recommend")["results"]) == 3


@pytest.mark.parametrize("path", [
    "{library}/music_database.npy",
    "{library}/music_database_segments.npy",
    "{library}/music_database_metadata.json",
    "{library}/processed_music/README.md",
    "{library}/processed_music/immich-memories-music-LICENSE-MUSIC.txt",
    "{root}/app.py",
    "{root}/recommend.py",
    "/etc/passwd",
    "{library}/processed_music/../music_database.npy",
    "{library}/processed_music/%2e%2e/music_database_metadata.json",
    "{library}/processed_music/{mood}/../../music_database.npy",
    "{library}/processed_music/../../../../../../etc/passwd",
    "processed_music/../music_database.npy",
    "app.py",
])
def test_nothing_but_library_audio_is_served(app, app_library, path):
    mood = next(p for p in (app_library / "processed_music").iterdir() if p.is_dir()).name
    path = path.format(library=app_library, root=ROOT, mood=mood)
    assert get(app, "/gradio_api/file=" + path).status == 403
    assert get(app, "/track/" + path).status == 403


def test_listens_on_loopback_only_by_default(app_process):
    """app.py was started without --host: its listening sockets are on 127.0.0.1 and nowhere else."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) == app_process.port:  # 0A = LISTEN
                listening.add(address)
    assert listening == {"0100007F"}  # 127.0.0.1, little-endian hex; 0.0.0.0 would be 00000000
    for address in _non_loopback_addresses():
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(5)
            s.connect((address, app_process.port))


def _non_loopback_addresses() -> list[str]:
    """This machine's IPv4 address on its default route, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent, the kernel only picks a source address
        except OSError:
            return []
        address = s.getsockname()[0]
    return [] if address.startswith("127.") else [address]


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", ["text", "truncated"])
def test_non_image_upload_is_an_error_and_the_next_request_works(client, photos, tmp_path, kind):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    if kind == "text":
        bad = tmp_path / "notes.txt"
        bad.write_text("not a photo\n")
    else:
        bad = tmp_path / "cut.png"
        bad.write_bytes(photos["coffee.png"].read_bytes()[:2000])
    with pytest.raises(AppError, match=rf"{bad.name} is (not an image|truncated or corrupt)") as raised:
        client.predict(image=handle_file(str(bad)), text="", topk=3, api_name="/recommend")
    assert "gradio" not in str(raised.value)  # the user sees their file's name, not the server's temporary path
    assert not re.search(r"[a-z](Error|Exception)\b", str(raised.value))  # words, not a Python class name
    result = client.predict(image=handle_file(str(photos["coffee.png"])), text="", topk=3, api_name="/recommend")
    assert len(result["results"]) == 3


def test_nothing_to_search_by_is_an_error(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Upload a photo"):
        client.predict(image=None, text="  ", topk=3, api_name="/recommend")


def test_filter_matching_nothing_is_an_error(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="no track in the library has the mood no such mood; the moods it has: calm"):
        client.predict(image=None, text="calm", topk=3, moods=["no such mood"], api_name="/recommend")


def test_recommend_api_filters_by_tempo(client, app_library, default_models):
    """The tempo box's text is /recommend's and /more_like_this's last parameter; a client that leaves it out is
    answered as before (the other tests)."""
    from gradio_client.exceptions import AppError

    db = load_database(LibraryPaths.at(app_library))
    tempos = sorted(t["bpm"] for t in db.tracks)
    bpm = f"{tempos[1]}-{tempos[-2]}"  # all but the slowest and the fastest track
    result = client.predict(image=None, text="anything", topk=20, bpm=bpm, api_name="/recommend")
    expected = recommend(None, default_models[1], db, text="anything", topk=20, filters=Filters(bpm=bpm)).to_dict()
    assert [t["file_path"] for t in result["results"]] == [t["file_path"] for t in expected["results"]]
    assert sorted(t["bpm"] for t in result["results"]) == tempos[1:-1]
    like = db.tracks[0]["file_path"]
    liked = client.predict(like=like, topk=20, bpm=f"-{tempos[-2]}", api_name="/more_like_this")
    assert {t["file_path"] for t in liked["results"]} == {t["file_path"] for t in db.tracks[1:]
                                                          if t["bpm"] <= tempos[-2]}
    with pytest.raises(AppError, match=re.escape("Tempo: 'fast' is not a tempo range: give 80-110")):
        client.predict(image=None, text="anything", topk=3, bpm="fast", api_name="/recommend")
    with pytest.raises(AppError, match=re.escape("no track in the library has a tempo of 300-400 BPM")):
        client.predict(like=like, topk=3, bpm="300-400", api_name="/more_like_this")


def test_more_like_this_api_answers_what_recommend_answers(client, app_library):
    from gradio_client.exceptions import AppError

    db = load_database(LibraryPaths.at(app_library))
    for like in (db.tracks[1]["file_path"], db.tracks[1]["id"]):
        result = client.predict(like=like, topk=20, api_name="/more_like_this")
        expected = recommend(None, None, db, topk=20, like=db.tracks[1]["file_path"]).to_dict()
        for track in expected["results"]:
            track["audio_url"] = track_url(track["id"])
        assert result == expected and db.tracks[1]["file_path"] not in [t["file_path"] for t in result["results"]]
    with pytest.raises(AppError, match=re.escape("'processed_music/nope.mp3' is no track of the library")):
        client.predict(like="processed_music/nope.mp3", topk=3, api_name="/more_like_this")


def test_user_errors_are_one_line_each_in_the_server_log(client, tmp_path, capfd):
    """A user's mistake is answered, not a fault of the program: one line in the log, no traceback."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo, not music\n")
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"no audio here" * 100)
    capfd.readouterr()  # the server's stderr is this process's: what it wrote before is not these requests'
    messages = []
    for call in (dict(image=handle_file(str(notes)), text="", topk=3, api_name="/recommend"),
                 dict(image=None, text=" ", topk=3, api_name="/recommend"),
                 dict(image=None, text="calm", topk=3, moods=["no such mood"], api_name="/recommend"),
                 dict(image=None, text="calm", topk=30, api_name="/recommend"),  # the page's slider stops at 20
                 dict(files=[], mood="", api_name="/add_music")):
        with pytest.raises(AppError) as raised:
            client.predict(**call)
        messages.append(raised.value.message)
    for files in ([notes], [broken]):  # files that are not music: said in the reply, or refused
        with contextlib.suppress(AppError):
            client.predict(files=[handle_file(str(f)) for f in files], mood="", api_name="/add_music")

    log = capfd.readouterr().err
    assert "Traceback" not in log
    for message in messages:
        assert sum(message in line for line in log.splitlines()) == 1, (message, log)


# ---------------------------------------------------------------------------------------------- the library tab


def test_uploaded_audio_is_recommendable_at_once(app, client, app_library, sample_tracks, tmp_path):
    from gradio_client import handle_file

    paths = LibraryPaths.at(app_library)
    before = load_database(paths)
    listed = {Path(t["file_path"]).name for t in before.tracks}
    new = tmp_path / "My Song – été.opus"  # its name is kept as it is
    shutil.copyfile(next(t for t in sample_tracks if t.name not in listed), new)
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"no audio here" * 100)
    *_, status, _ = client.predict(files=[handle_file(str(new)), handle_file(str(broken))], mood="Rainy Day",
                                   api_name="/add_music")
    assert status.startswith("Added 1 track(s); 1 not added")
    assert "broken.mp3: cannot decode broken.mp3" in status  # the reply says why, not only the page's warnings

    after = load_database(paths)
    assert len(after) == len(before) + 1
    assert after.tracks[-1]["file_path"] == f"processed_music/rainy day/{new.name}"
    assert not any(paths.new_music.rglob("*.*"))  # moved into processed_music/, nothing left behind
    # No restart: the running app recommends it, filtered by the mood it was given.
    result = client.predict(image=None, text="rain", topk=20, moods=["rainy day"], api_name="/recommend")
    assert [t["file_path"] for t in result["results"]] == [f"processed_music/rainy day/{new.name}"]
    assert get(app, result["results"][0]["audio_url"]).status == 200


def test_tracks_added_with_the_cli_while_the_app_runs_are_recommended(app, client, app_library, sample_tracks,
                                                                      checkpoints):
    track = sample_tracks[3]
    (app_library / "new_music" / "added by cli").mkdir(parents=True)
    shutil.copyfile(track, app_library / "new_music" / "added by cli" / track.name)
    done = run_cli("music_to_vector.py", "--library", app_library, "--clap-model", checkpoints["clap"])
    assert done.returncode == 0, done.stderr

    result = client.predict(image=None, text="anything", topk=20, moods=["added by cli"], api_name="/recommend")
    assert [t["file_path"] for t in result["results"]] == [f"processed_music/added by cli/{track.name}"]
    assert get(app, result["results"][0]["audio_url"]).status == 200


def library_state(library: Path) -> dict[str, bytes]:
    """Every file of the library, byte for byte (the lock file is no content: any change leaves it)."""
    return {p.relative_to(library).as_posix(): p.read_bytes() for p in sorted(library.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def test_set_track_fields_corrects_a_track_and_the_app_sees_it_at_once(client, app_library):
    import numpy as np

    paths = LibraryPaths.at(app_library)
    before = load_database(paths)
    target = before.tracks[2]
    answer = client.predict(track=target["id"], fields={"mood": "  sleepy ", "title": "Night Drive"},
                            api_name="/set_track_fields")
    assert answer == {"id": target["id"], "file_path": target["file_path"], "title": "Night Drive",
                      "artist": target.get("artist", ""), "genre": target["genre"], "mood": "sleepy"}
    after = load_database(paths)
    np.testing.assert_array_equal(after.vectors, before.vectors)
    np.testing.assert_array_equal(after.segments, before.segments)
    expected = [dict(t) for t in before.tracks]
    expected[2].update(mood="sleepy", title="Night Drive")
    assert after.tracks == expected
    # The next request reads the corrected library: its filter and its result's tags.
    result = client.predict(image=None, text="night", topk=20, moods=["sleepy"], api_name="/recommend")
    assert [(t["file_path"], t["title"], t["mood"]) for t in result["results"]] == \
        [(target["file_path"], "Night Drive", "sleepy")]

    # Named by its file, set back: the library is as it was; a value already stored commits nothing.
    client.predict(track=target["file_path"], fields={"mood": target["mood"], "title": target["title"]},
                   api_name="/set_track_fields")
    assert load_database(paths).tracks == before.tracks
    metadata = (app_library / "music_database_metadata.json").stat()
    client.predict(track=target["id"], fields={"mood": target["mood"]}, api_name="/set_track_fields")
    assert (app_library / "music_database_metadata.json").stat().st_ino == metadata.st_ino


@pytest.mark.parametrize("track, fields, message", [
    ("no-such-id", {"mood": "calm"}, "'no-such-id' is no track of the library in "),
    ("processed_music/nope.mp3", {"title": "x"}, "'processed_music/nope.mp3' is no track of the library in "),
    ("TRACK", {"mood": "calm", "year": "1999"}, "'year' cannot be set: a track's editable fields are title"),
    ("TRACK", {}, "Say which fields to set"),
    ("TRACK", {"mood": "x" * 10_000}, "The mood is 10000 characters long; at most 64"),
    ("TRACK", {"title": "x" * 501}, "The title is 501 characters long; at most 500"),
    ("TRACK", {"title": "Night Drive", "genre": "jazz\nrock"}, "The genre must be one line of printable text"),
    ("TRACK", {"artist": "a\x00b"}, "The artist must be one line of printable text"),
    ("TRACK", {"mood": ["a"]}, "The mood must be text, not list"),
])
def test_a_bad_correction_is_a_clear_error_and_changes_nothing(client, app_library, track, fields, message, capfd):
    from gradio_client.exceptions import AppError

    known = load_database(LibraryPaths.at(app_library)).tracks[0]
    before = library_state(app_library)
    capfd.readouterr()  # the server's stderr is this process's: what it wrote before is not this request's
    with pytest.raises(AppError, match=re.escape(message)) as raised:
        client.predict(track=known["id"] if track == "TRACK" else track, fields=fields, api_name="/set_track_fields")
    assert raised.value.message.rstrip(".").endswith("nothing was changed")
    assert library_state(app_library) == before
    log = capfd.readouterr().err
    assert "Traceback" not in log and log.count("User error: ") == 1, log


def test_remove_tracks_moves_their_files_to_removed_and_the_app_forgets_them(app, client, app_library):
    from gradio_client.exceptions import AppError

    paths = LibraryPaths.at(app_library)
    before = load_database(paths)
    by_id, by_path = before.tracks[1], before.tracks[3]
    answer = client.predict(tracks=[by_path["file_path"], by_id["id"]], api_name="/remove_tracks")
    moved = {t["file_path"]: "removed/" + t["file_path"].removeprefix("processed_music/") for t in (by_id, by_path)}
    assert answer == {"removed": [{"file_path": path, "moved_to": moved[path]} for path in moved],
                      "tracks": len(before) - 2}
    for source, target in moved.items():
        assert not (app_library / source).exists()
        assert file_sha256(app_library / target) in (by_id["sha256"], by_path["sha256"])
    after = load_database(paths)
    assert [t["sha256"] for t in after.tracks] == \
        [t["sha256"] for t in before.tracks if t["file_path"] not in moved]

    # At once: not recommended, not served, not a track to be like.
    result = client.predict(image=None, text="anything", topk=20, max_per_artist=0, api_name="/recommend")
    assert len(result["results"]) == len(after) and not moved.keys() & {t["file_path"] for t in result["results"]}
    for track in (by_id, by_path):
        assert get(app, track_url(track["id"])).status == 403
        assert get(app, path_url(track["file_path"])).status == 403
    with pytest.raises(AppError, match="is no track of the library"):
        client.predict(like=by_id["id"], topk=3, api_name="/more_like_this")


def test_remove_tracks_takes_one_track_as_a_string(client, app_library):
    paths = LibraryPaths.at(app_library)
    before = load_database(paths)
    track = before.tracks[-1]
    answer = client.predict(tracks=track["file_path"], api_name="/remove_tracks")
    assert [item["file_path"] for item in answer["removed"]] == [track["file_path"]]
    assert answer["tracks"] == len(before) - 1 == len(load_database(paths))


@pytest.mark.parametrize("tracks, message", [
    (["TRACK", "no-such-id"], "'no-such-id' is no track of the library in "),
    ([], "Choose the tracks to remove first."),
    (["  "], "Choose the tracks to remove first."),
])
def test_removing_an_unknown_track_is_a_clear_error_and_changes_nothing(client, app_library, tracks, message):
    from gradio_client.exceptions import AppError

    known = load_database(LibraryPaths.at(app_library)).tracks[0]
    before = library_state(app_library)
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(tracks=[known["id"] if t == "TRACK" else t for t in tracks], api_name="/remove_tracks")
    assert library_state(app_library) == before


def test_uploads_do_not_pile_up_in_the_temp_folder(library_copy, checkpoints, sample_tracks, photos, tmp_path,
                                                   shared_exports):
    """Uploaded audio is removed as soon as it is added or refused; a photo stays while the page may ask about it
    again, and goes when the server stops. What may stay is Gradio's copy of the example photos."""
    from gradio_client import Client, handle_file

    from music_mood.web.recommend_tab import EXAMPLE_PHOTOS

    def kept(folder: Path) -> set[str]:
        return {p.name for p in folder.rglob("*") if p.is_file()}

    listed = {Path(t["file_path"]).name for t in load_database(LibraryPaths.at(library_copy)).tracks}
    new = next(t for t in sample_tracks if t.name not in listed)
    broken, notes = tmp_path / "broken.mp3", tmp_path / "notes.txt"
    broken.write_bytes(b"no audio here" * 100)
    notes.write_text("not music\n")
    work = tmp_path / "run"
    work.mkdir()
    uploads = work / "gradio-uploads"  # GRADIO_TEMP_DIR of the app
    with serving_app(library_copy, checkpoints, work, exports=shared_exports) as app:
        client = Client(app.url, verbose=False)
        *_, status, _ = client.predict(files=[handle_file(str(f)) for f in (new, broken, notes)], mood="",
                                       api_name="/add_music")
        assert status.startswith("Added 1 track(s); 2 not added")
        assert kept(uploads) <= set(EXAMPLE_PHOTOS)
        client.predict(image=handle_file(str(photos["motorcycle_left.png"])), text="", topk=3,
                       api_name="/recommend")
        assert "motorcycle_left.png" in kept(uploads)  # the Recommend button asks about it again
    assert kept(uploads) <= set(EXAMPLE_PHOTOS)


@pytest.mark.parametrize("when", ["loading", "serving"])
def test_sigterm_stops_the_app_promptly_and_removes_the_uploads(library_copy, checkpoints, photos, tmp_path,
                                                               shared_exports, when):
    """SIGTERM (kill, a service manager) while the models load, and once they serve: the app stops by itself
    within seconds, exit 0, and Gradio's shutdown removes the photo uploaded meanwhile, even when a second SIGTERM
    follows while it stops. Once, a SIGTERM during the
    loading became a KeyboardInterrupt that Python swallowed in a weakref callback (4 times in 6): the app served
    on and needed SIGKILL, which leaves the uploads. Repeated, since that was a race."""
    import signal
    import subprocess
    import time

    import httpx

    from music_mood.web.recommend_tab import EXAMPLE_PHOTOS

    for attempt in range(3 if when == "loading" else 2):
        work = tmp_path / f"run-{attempt}"
        uploads = work / "gradio-uploads"  # GRADIO_TEMP_DIR of the app
        with running_app(library_copy, checkpoints, work, exports=shared_exports, wait=False) as app:
            deadline = time.monotonic() + 120

            def wait_for(line: str) -> None:
                while line not in app.log_text():
                    assert app.process.poll() is None and time.monotonic() < deadline, app.log_text()
                    time.sleep(0.02)

            # The page serves before the models load: the photo goes up first, so that the SIGTERM can follow the
            # "Loading models" line at once (the tiny models load in a second or two).
            wait_for("Serving at")
            with open(photos["coffee.png"], "rb") as photo:  # kept by Gradio until the app stops
                httpx.post(f"{app.url}gradio_api/upload", files={"files": ("coffee-upload.png", photo)},
                           timeout=30).raise_for_status()
            assert any(p.name == "coffee-upload.png" for p in uploads.rglob("*"))
            wait_for("Loading models:" if when == "loading" else "Models loaded;")
            loaded = "Models loaded;" in app.log_text()
            app.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            if app.process.poll() is None:  # an impatient second one (kill, kill) must not break the clean-up
                app.process.send_signal(signal.SIGTERM)
            try:
                code = app.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"attempt {attempt}: the app did not stop within 20 s of SIGTERM:\n{app.log_text()}")
        log = app.log_text()
        # 0; or, when the second SIGTERM came after the clean-up, while Python shut down, killed by it: nothing
        # was left to do by then (the handlers stay until the server is closed and its uploads removed).
        assert code in (0, -signal.SIGTERM), log
        assert "Stopping the server." in log and "Exception ignored" not in log and "Traceback" not in log, log
        assert {p.name for p in uploads.rglob("*") if p.is_file()} <= set(EXAMPLE_PHOTOS)
        if when == "loading":
            assert not loaded or attempt, "the models were loaded before the SIGTERM: no test of the loading"


# ---------------------------------------------------------------------------------------------- in process


def test_empty_library_is_an_error_in_the_page(blip, clap_text, checkpoints, isolated_library, photos):
    import gradio as gr

    from music_mood.web.recommend_tab import recommend_photo

    library = LiveLibrary(LibraryPaths.at(isolated_library), checkpoints["clap"])
    with pytest.raises(gr.Error, match="the music library is empty"):
        recommend_photo(library, blip, clap_text, str(photos["coffee.png"]))


def test_an_edited_cell_corrects_the_track_its_row_names(library_copy, checkpoints):
    """What the Library table's edit event commits: the field of the edited column, of the track the row's file
    names, the "(auto)" mark dropped; any other column, a row the user added and a row whose track is gone are
    refused with a message, changing nothing."""
    import gradio as gr

    from music_mood.web.library_tab import edit_cell
    from music_mood.web.views import LIBRARY_COLUMNS, library_rows

    library = LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"])
    db = library.current()
    rows = library_rows(db)
    mood, title = LIBRARY_COLUMNS.index("mood"), LIBRARY_COLUMNS.index("title")
    status = edit_cell(library, rows, (1, mood), "  rainy ")
    assert status == f"Set the mood of {db.tracks[1]['file_path'].replace('_', chr(92) + '_')} to “rainy”."
    edit_cell(library, rows, (2, title), "dreamy (auto)")
    expected = [dict(t) for t in db.tracks]
    expected[1]["mood"], expected[2]["title"] = "rainy", "dreamy"
    assert library.current().tracks == expected

    before = library_state(library_copy)
    gone = [*rows[0][:-1], "processed_music/gone.opus"]
    for table, index, message in ((rows, (0, LIBRARY_COLUMNS.index("file")), "The file column cannot be changed"),
                                  (rows, (0, 0), "The # column cannot be changed"),
                                  ([*rows, [None] * len(LIBRARY_COLUMNS)], (len(rows), mood), "That row is no track"),
                                  ([gone], (0, mood), "processed_music/gone.opus is no longer in the library")):
        with pytest.raises(gr.Error, match=re.escape(message)):
            edit_cell(library, table, index, "calm")
    assert library_state(library_copy) == before


def test_removal_asks_first_naming_the_tracks_and_removed(library_copy, checkpoints):
    import gradio as gr

    from music_mood.web.library_tab import removal_question

    library = LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"])
    track = library.current().tracks[0]
    before = library_state(library_copy)
    question = removal_question(library, [track["id"]])
    assert question.startswith("**Remove 1 track(s) from the library?**")
    assert track["file_path"].replace("_", "\\_") in question and "move to `removed/`" in question
    with pytest.raises(gr.Error, match="'nope' is no track of the library"):
        removal_question(library, [track["id"], "nope"])
    assert library_state(library_copy) == before  # asking changes nothing


def test_library_is_read_again_only_when_a_commit_changed_it(library_copy, checkpoints, clap_audio):
    """One stat of the metadata file per request; the same Database until a builder commits, then the new one."""

    library = LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"])
    before = library.current()
    assert library.current() is before
    listed = find_audio_files(library_copy / "processed_music")[0]
    put_in_new_music(library_copy, [listed], mood_from_folder=False)  # already listed: the builder commits nothing
    build_library(clap_audio, library.paths, progress=False)
    assert library.current() is before
    shutil.rmtree(library_copy / "new_music")
    build_library(clap_audio, library.paths, rebuild=True, progress=False)
    after = library.current()
    assert after is not before and len(after) == len(before)


def test_bad_uploads_are_named_and_leave_the_library_unchanged(library_copy, checkpoints, clap_audio, tmp_path,
                                                               sample_tracks):
    from music_mood.uploads import add_uploads

    library = LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"])
    before = library.current()
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"this is no mp3" * 100)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    already = library_copy / before.tracks[0]["file_path"]
    result, problems = add_uploads(library.paths, clap_audio, [broken, notes, already])
    assert result == {"added": [], "failed": 1, "not_added": 3}
    assert [p.split(":")[0] for p in problems] == ["notes.txt", "broken.mp3", already.name]
    assert "cannot decode broken.mp3" in problems[1]
    assert f"already in the library as {before.tracks[0]['file_path']}" in problems[2]
    assert [t["sha256"] for t in library.current().tracks] == [t["sha256"] for t in before.tracks]
    assert not any(library.paths.new_music.rglob("*.*"))  # the failed copies are not left to fail again


def test_upload_never_removes_a_file_it_did_not_create(library_copy, checkpoints, clap_audio, sample_tracks,
                                                         tmp_path):
    """The user's own files in processed_music/calm/, a corrupt take and a backup copy of a listed track, are
    reported by the builder during an upload; the upload leaves both exactly as they were."""
    from music_mood.uploads import add_uploads

    library = LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"])
    listed = load_database(library.paths).tracks
    calm = library_copy / "processed_music" / "calm"
    original = next(t for t in listed if t["file_path"].startswith("processed_music/calm/"))
    demo_take = calm / "my_demo_take.flac"
    demo_take.write_bytes(b"fLaC" + bytes(range(256)) * 20)
    backup = calm / "x (backup).opus"
    shutil.copyfile(library_copy / original["file_path"], backup)
    users = {path: path.read_bytes() for path in (demo_take, backup)}
    new = next(t for t in sample_tracks if t.name not in {Path(t["file_path"]).name for t in listed})
    upload = tmp_path / new.name
    shutil.copyfile(new, upload)

    result, problems = add_uploads(library.paths, clap_audio, [upload])
    assert all(path.exists() for path in users), "the upload deleted a file of the user's"
    assert {path: path.read_bytes() for path in users} == users
    assert result == {"added": [f"processed_music/{new.name}"], "failed": 0, "not_added": 0}
    assert len(problems) == 2 and all("left where it is" in p for p in problems)
    assert "processed_music/calm/my_demo_take.flac" in " ".join(problems)


def test_failed_upload_leaves_no_folder_it_made(library_copy, checkpoints, clap_audio, tmp_path):
    """The mood folder an upload made in new_music/ goes when nothing in it was added; a folder that was there
    before the upload stays, even when empty."""
    from music_mood.uploads import add_uploads

    library = LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"])
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"this is no mp3" * 100)
    kept = library_copy / "new_music" / "kept"
    kept.mkdir(parents=True)

    add_uploads(library.paths, clap_audio, [broken], mood="Nope")
    add_uploads(library.paths, clap_audio, [broken], mood="kept")
    assert sorted(p.name for p in (library_copy / "new_music").iterdir()) == ["kept"]
    assert not any(kept.iterdir())


def test_upload_gone_before_its_turn_is_named(library_copy, checkpoints, clap_audio, tmp_path):
    """An upload removed before its request ran (the same file uploaded twice at once, the first request took
    it) is a line for the user, not a server fault, and leaves no folder behind."""
    from music_mood.uploads import add_uploads

    library = LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"])
    result, problems = add_uploads(library.paths, clap_audio, [tmp_path / "gone.opus"], mood="gone")
    assert result == {"added": [], "failed": 0, "not_added": 1}
    assert problems == ["gone.opus: the uploaded file is gone from the server; upload it again"]
    assert not (library_copy / "new_music" / "gone").exists()


def test_uploads_cannot_choose_where_they_go(library_copy, checkpoints, clap_audio, sample_tracks, tmp_path):
    from music_mood.uploads import add_uploads

    library = LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"])
    listed = {Path(t["file_path"]).name for t in library.current().tracks}
    new = next(t for t in sample_tracks if t.name not in listed)
    renamed = tmp_path / ".hidden.opus"
    shutil.copyfile(new, renamed)
    result, problems = add_uploads(library.paths, clap_audio, [renamed], mood="../../etc")
    assert not problems and result["added"] == ["processed_music/etc/hidden.opus"]


def test_upload_names_keep_what_the_file_system_accepts(library_copy, checkpoints, clap_audio, sample_tracks,
                                                         tmp_path):
    from music_mood.uploads import add_uploads

    library = LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"])
    listed = {Path(t["file_path"]).name for t in load_database(library.paths).tracks}
    new = next(t for t in sample_tracks if t.name not in listed)
    upload = tmp_path / "My Song – été (live) [2024] #1.opus"
    shutil.copyfile(new, upload)
    result, problems = add_uploads(library.paths, clap_audio, [upload], mood="Café")
    assert not problems and result["added"] == ["processed_music/café/My Song – été (live) [2024] #1.opus"]


@pytest.mark.parametrize("name, kept", [
    ("My Song – été.flac", "My Song – été.flac"),
    ("日本語の歌.mp3", "日本語の歌.mp3"),
    ("../../etc/x.mp3", "x.mp3"),
    ("C:\\Users\\me\\song.mp3", "song.mp3"),
    ("...hidden.mp3", "hidden.mp3"),
    ("bell\x07\x00\x1b.mp3", "bell.mp3"),
    ("..", "upload"),
])
def test_upload_name_strips_only_folders_dots_and_control_characters(name, kept):
    from music_mood.uploads import upload_name

    assert upload_name(name) == kept


def test_results_are_escaped_and_play_from_their_best_moment():
    from music_mood.web.views import audio_url, render_tracks

    file_path, track_id = "processed_music/calm/a b#c?.opus", "0123456789abcdef"
    track = {"rank": 1, "title": "<script>alert(1)</script>", "artist": 'A "&" B', "mood": "<b>", "genre": "",
             "score": 0.5, "best_segment_start_s": 30.0, "file_path": file_path, "id": track_id,
             "audio_url": audio_url(track_id)}
    second = {**track, "rank": 2, "best_segment_start_s": None}
    page = render_tracks({"results": [track, second]})
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "A &quot;&amp;&quot; B" in page and "mood: &lt;b&gt;" in page
    assert "genre: – · score" in page  # a track without a tempo says nothing about it
    assert "genre: – · 96.4 BPM · score" in render_tracks({"results": [{**track, "bpm": 96.4}]})
    src = track_url(track_id)  # the id alone: a path's # or ? could not cut the URL short
    assert f'<audio controls preload="auto" src="{src}#t=30">' in page
    assert f'<audio controls preload="metadata" src="{src}">' in page
    assert file_path not in src


def test_library_table_shows_each_tempo(library_copy):
    from music_mood.web.views import LIBRARY_COLUMNS, library_rows

    db = load_database(LibraryPaths.at(library_copy))
    db.tracks[0].pop("bpm")  # added before tempos were stored: an empty cell
    rows = library_rows(db)
    column = LIBRARY_COLUMNS.index("bpm")
    assert all(len(row) == len(LIBRARY_COLUMNS) for row in rows)
    assert [row[column] for row in rows] == [""] + [f"{t['bpm']:.1f}" for t in db.tracks[1:]]
    assert [row[LIBRARY_COLUMNS.index("file")] for row in rows] == [t["file_path"] for t in db.tracks]
    assert {row[LIBRARY_COLUMNS.index("source")] for row in rows} == {"library"}  # all in processed_music/


# ---------------------------------------------------------------------------------------------- start-up


def test_start_builds_the_database_from_new_music(isolated_library, checkpoints, sample_tracks, capsys):
    from app import prepare_library

    put_in_new_music(isolated_library, sample_tracks[:2])
    prepare_library(LiveLibrary(LibraryPaths.at(isolated_library), checkpoints["clap"]), ModelChoice("fp32"))
    db = load_database(LibraryPaths.at(isolated_library))
    assert sorted(Path(t["file_path"]).name for t in db.tracks) == sorted(t.name for t in sample_tracks[:2])
    assert not any((isolated_library / "new_music").rglob("*.*"))
    assert "Adding 2 audio file(s)" in capsys.readouterr().err


def test_start_names_each_file_it_did_not_add(library_copy, checkpoints, capsys):
    """A copy of a listed track and a broken file in new_music/: both named on stderr, with why, and left there."""
    from app import prepare_library

    listed = load_database(LibraryPaths.at(library_copy)).tracks[0]["file_path"]
    copy = library_copy / "new_music" / "again.opus"
    broken = library_copy / "new_music" / "broken.mp3"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(library_copy / listed, copy)
    broken.write_bytes(b"not audio" * 100)
    prepare_library(LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"]), ModelChoice("fp32"))
    err = capsys.readouterr().err
    assert f"Note: {copy} is already in the library as {listed}; left where it is." in err
    assert f"Error: {broken}: cannot decode broken.mp3" in err
    assert "0 added, 1 failed, 1 already there." in err and copy.exists() and broken.exists()


def test_start_imports_the_sample_library_when_there_is_no_music(isolated_library, checkpoints, monkeypatch, capsys):
    import app

    def import_two(paths):  # the real import, then all but two files removed, to keep the test fast
        copied = import_sample_library(paths)
        for extra in copied[2:]:
            extra.unlink()
        return copied[:2]

    monkeypatch.setattr(app, "import_sample_library", import_two)
    app.prepare_library(LiveLibrary(LibraryPaths.at(isolated_library), checkpoints["clap"]), ModelChoice("fp32"))
    assert len(load_database(LibraryPaths.at(isolated_library))) == 2
    assert (isolated_library / "processed_music" / "immich-memories-music-LICENSE-MUSIC.txt").exists()
    assert "importing the sample tracks of immich-memories-music" in capsys.readouterr().err


def test_start_leaves_a_built_library_alone(library_copy, checkpoints, capsys):
    from app import prepare_library

    before = (library_copy / "music_database_metadata.json").read_bytes()
    prepare_library(LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"]), ModelChoice("fp32"))
    assert (library_copy / "music_database_metadata.json").read_bytes() == before
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------- models


def test_page_says_models_are_loading_and_requests_wait_for_them(checkpoints, library_copy, photos):
    """The page is served while the models load: it says so, and a request made meanwhile waits, then answers."""
    import threading

    from music_mood.models import BackgroundModels as Models
    from music_mood.web.page import build_app

    models = Models(checkpoints["blip"], checkpoints["clap"], ModelChoice("fp32"))
    assert "Loading the models" in models.status()
    build_app(LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"]), models)  # builds while loading
    answered = []
    waiter = threading.Thread(target=lambda: answered.append(models.query_models()))
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive() and not answered  # still waiting: nothing loaded yet
    models.load()
    waiter.join(timeout=60)
    assert answered and answered[0] == (models.blip, models.clap) and models.blip is not None
    assert models.status() == ""


def test_adding_music_waits_for_the_models_that_are_loading(checkpoints, monkeypatch):
    """An upload made while the page's models load starts its CLAP audio model only once they are loaded: two
    threads loading transformers models at once broke both (seen: the app died on such an upload)."""
    import threading

    from music_mood import models as models_module
    from music_mood.models import BackgroundModels as Models

    models = Models(checkpoints["blip"], checkpoints["clap"], ModelChoice("fp32"))
    loaded_first = []
    monkeypatch.setattr(models_module, "load_clap_audio",
                        lambda name, choice: loaded_first.append(models.ready.is_set()))
    upload = threading.Thread(target=models.audio_model)
    upload.start()
    models.load()
    upload.join()
    assert loaded_first == [True]


def test_loading_prepares_the_mood_baseline_before_the_first_request(checkpoints, monkeypatch):
    """The grey-image pass (or reading its cache) happens while the page says the models are loading."""
    import image_to_vector
    from music_mood.models import BackgroundModels as Models
    from music_mood.models import load_blip

    load_blip(checkpoints["blip"], ModelChoice("fp32")).memory.clear()  # as in a new process
    models = Models(checkpoints["blip"], checkpoints["clap"], ModelChoice("fp32"))
    models.load()
    assert tuple(image_to_vector.MOOD_VOCABULARY) in image_to_vector.memory_of(models.blip).baselines
    assert list(image_to_vector.cache_dir().glob("mood-baseline-*.json"))


def test_model_that_cannot_load_is_an_error_in_the_page(checkpoints, tmp_path):
    """The page's status says so, and a request gets the reason (the Recommend tab shows ModelLoadError as gr.Error)."""
    from music_mood.models import BackgroundModels as Models
    from music_mood.models import ModelLoadError

    models = Models(str(tmp_path / "no-such-blip"), checkpoints["clap"], ModelChoice("fp32"))
    models.load()
    assert "cannot load the BLIP model" in models.status()
    with pytest.raises(ModelLoadError, match="cannot load the BLIP model"):
        models.query_models()


def test_app_with_a_missing_model_exits_1_with_one_line(library_copy, checkpoints, tmp_path):
    from tests.app_server import free_port
    from tests.conftest import run_cli

    done = run_cli("app.py", "--port", free_port(), "--blip-model", tmp_path / "nope",
                   "--clap-model", checkpoints["clap"])
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cannot load the BLIP model" in errors[0] and "--blip-model" in errors[0]


def test_busy_port_is_one_line_naming_the_flag(app_process, library_copy, checkpoints):
    """A second app.py on the port of a running one says so in one line, before any start-up work."""
    port = app_process.port
    done = run_cli("app.py", "--port", port, "--library", library_copy, "--blip-model", checkpoints["blip"],
                   "--clap-model", checkpoints["clap"])
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "server_port" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: port {port} is in use (another app.py?); pass --port, e.g. --port {port + 1}"]
