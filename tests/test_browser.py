"""The page in a real browser (Debian's Chromium driven by Playwright): a photo in, K players out, each starting at
its track's best moment; the Library tab's corrections and removals; the variety option."""
from __future__ import annotations

import shutil
from urllib.parse import urlsplit

import pytest

from music_mood.edit import remove_tracks, set_fields
from music_mood.library import LibraryPaths, load_database
from music_mood.recommendation import recommend
from music_mood.search import Filters
from tests.app_server import get, running_copy
from tests.conftest import ROOT, WAIT_MS, open_page, run_cli

SCREENSHOT = ROOT / "test-artifacts" / "app.png"
LIBRARY_SCREENSHOT = ROOT / "test-artifacts" / "library.png"


@pytest.fixture(scope="module")
def app(built_library, checkpoints, tmp_path_factory, shared_exports):
    with running_copy(built_library, checkpoints, tmp_path_factory, shared_exports, "browser") as running:
        yield running


@pytest.fixture
def page(browser, app):
    with open_page(browser, app.url) as page:
        yield page


def upload_photo(page, path) -> None:
    page.locator("#photo input[type=file]").set_input_files(str(path))
    page.wait_for_selector("#photo img", timeout=WAIT_MS)  # the preview appears once the upload has finished


def test_photo_gives_players_that_start_at_the_best_moment(page, app, default_models, photos):
    db = load_database(LibraryPaths.at(app.library))
    expected = recommend(*default_models, db, image=photos["chelsea.png"], topk=10)
    k = min(10, len(db))  # the slider's default, or the whole library when it is smaller

    upload_photo(page, photos["chelsea.png"])
    page.click("#recommend")
    page.wait_for_function(f"document.querySelectorAll('#tracks audio').length === {k}", timeout=WAIT_MS)

    assert page.locator("#caption textarea").input_value() == expected.caption
    assert page.locator("#mood-words textarea").input_value() == ", ".join(expected.mood_words)
    assert page.locator("#query-text textarea").input_value() == expected.query_text
    players = page.locator("#tracks audio")
    assert [players.nth(i).get_attribute("preload") for i in range(k)] == ["auto"] + ["metadata"] * (k - 1)
    starts = []
    for i, track in enumerate(expected.results):
        src = players.nth(i).get_attribute("src")
        url = urlsplit(src)
        assert url.path == f"/track/{track.id}"  # by its id: no path of the server in the page
        assert url.fragment == f"t={track.best_segment_start_s:g}"
        response = get(app, src.split("#")[0], headers={"Range": "bytes=0-1023"})  # as a player asks first
        assert response.status in (200, 206) and response.getheader("content-type").startswith("audio/")
        starts.append(track.best_segment_start_s)
    assert len(starts) == k

    # The browser itself loaded every player and put it at its best moment (the media fragment #t=).
    page.wait_for_function(
        "starts => [...document.querySelectorAll('#tracks audio')].every((a, i) => a.readyState >= 1 && "
        "Math.abs(a.currentTime - starts[i]) < 0.5)", arg=starts, timeout=WAIT_MS)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_dropping_in_a_photo_is_enough(page, app, default_models, photos):
    """No button to find: the photo alone brings its music, and the button then re-asks with other settings."""
    db = load_database(LibraryPaths.at(app.library))
    expected = recommend(*default_models, db, image=photos["astronaut.png"], topk=10)
    upload_photo(page, photos["astronaut.png"])
    page.wait_for_function(f"document.querySelectorAll('#tracks audio').length === {min(10, len(db))}",
                           timeout=WAIT_MS)
    assert page.locator("#caption textarea").input_value() == expected.caption

    page.locator("#topk input[type=number]").fill("2")
    page.locator("#topk input[type=number]").press("Enter")
    page.click("#recommend")
    page.wait_for_function("document.querySelectorAll('#tracks audio').length === 2", timeout=WAIT_MS)
    assert page.locator("#caption textarea").input_value() == expected.caption


def test_more_like_this_button_lists_the_tracks_nearest_that_track(page, app, default_models, photos):
    db = load_database(LibraryPaths.at(app.library))
    upload_photo(page, photos["coffee.png"])
    page.wait_for_selector("#tracks audio", timeout=WAIT_MS)
    second = page.locator("#tracks li.track").nth(1)
    chosen = second.get_attribute("data-file")
    expected = recommend(None, None, db, like=chosen, topk=10)
    second.locator("button.more-like").click()
    page.wait_for_function("text => document.querySelector('#query-text textarea').value === text",
                           arg=f"more like {chosen}", timeout=WAIT_MS)
    page.wait_for_function(f"document.querySelectorAll('#tracks audio').length === {len(expected.results)}",
                           timeout=WAIT_MS)
    listed = [page.locator("#tracks li.track").nth(i).get_attribute("data-file")
              for i in range(len(expected.results))]
    assert listed == [t.file_path for t in expected.results] and chosen not in listed
    assert page.locator("#caption textarea").input_value() == ""


def test_the_tempo_box_lists_only_the_tracks_in_its_range(page, app, default_models):
    db = load_database(LibraryPaths.at(app.library))
    tempos = sorted(t["bpm"] for t in db.tracks)
    bpm = f"{tempos[1]}-{tempos[-2]}"  # all but the slowest and the fastest track
    expected = recommend(None, default_models[1], db, text="anything", topk=10, filters=Filters(bpm=bpm))
    page.fill("#text textarea", "anything")
    page.fill("#bpm textarea", bpm)
    page.click("#recommend")
    page.wait_for_function(f"document.querySelectorAll('#tracks audio').length === {len(expected.results)}",
                           timeout=WAIT_MS)
    cards = page.locator("#tracks li.track")
    assert [cards.nth(i).get_attribute("data-file") for i in range(len(expected.results))] == \
        [t.file_path for t in expected.results]
    for i, track in enumerate(expected.results):
        assert f"{track.bpm:.1f} BPM" in cards.nth(i).locator(".meta").inner_text()


def test_non_image_shows_an_error_and_the_page_keeps_working(page, tmp_path, photos):
    bad = tmp_path / "notes.png"
    bad.write_text("this is text, not a photo\n")
    page.locator("#photo input[type=file]").set_input_files(str(bad))
    page.wait_for_timeout(1000)
    page.click("#recommend")
    error = page.get_by_text("notes.png is not an image we can read")
    error.first.wait_for(timeout=WAIT_MS)

    page.locator("#photo button[aria-label='Remove Image']").first.click()
    upload_photo(page, photos["coffee.png"])
    page.click("#recommend")
    page.wait_for_selector("#tracks audio", timeout=WAIT_MS)
    assert page.locator("#caption textarea").input_value() != ""


def test_uploading_music_in_the_library_tab_makes_it_recommendable(page, app, sample_tracks, tmp_path):
    listed = {t["file_path"].rsplit("/", 1)[-1] for t in load_database(LibraryPaths.at(app.library)).tracks}
    new = next(t for t in sample_tracks if t.name not in listed)
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"no audio here" * 100)
    page.get_by_role("tab", name="Library").click()
    page.locator("#uploads input[type=file]").set_input_files([str(new), str(broken)])
    page.fill("#upload-mood textarea", "browser upload")
    page.wait_for_timeout(1000)
    page.click("#add-music")
    page.get_by_text("Added 1 track(s); 1 not added").wait_for(timeout=WAIT_MS)
    page.get_by_text("broken.mp3: cannot decode broken.mp3").first.wait_for(timeout=WAIT_MS)  # the warning
    assert page.locator("#library").get_by_text(new.stem.replace("_", " ")).count() >= 1

    page.get_by_role("tab", name="Recommend").click()
    page.fill("#text textarea", "anything")
    page.locator("#moods input").fill("browser upload")
    page.keyboard.press("Enter")
    page.click("#recommend")
    page.wait_for_function("document.querySelectorAll('#tracks audio').length === 1", timeout=WAIT_MS)
    src = page.locator("#tracks audio").first.get_attribute("src")
    added = next(t for t in load_database(LibraryPaths.at(app.library)).tracks
                 if t["file_path"] == f"processed_music/browser upload/{new.name}")
    assert src.split("#")[0] == f"/track/{added['id']}"


def test_a_new_page_shows_the_library_as_it_is_now(page, app, sample_tracks, checkpoints):
    """Tracks added with music_to_vector.py while the app runs are in the next page's status line and table."""
    track = sample_tracks[2]
    (app.library / "new_music" / "added meanwhile").mkdir(parents=True)
    shutil.copyfile(track, app.library / "new_music" / "added meanwhile" / track.name)
    done = run_cli("music_to_vector.py", "--library", app.library, "--clap-model", checkpoints["clap"])
    assert done.returncode == 0, done.stderr
    db = load_database(LibraryPaths.at(app.library))

    page.reload()
    page.wait_for_selector("#recommend", timeout=WAIT_MS)
    page.get_by_role("tab", name="Library").click()
    page.get_by_text(f"The library holds {len(db)} track(s).").wait_for(timeout=WAIT_MS)
    assert page.locator("#library").get_by_text(db.tracks[-1]["title"]).count() >= 1


def library_cell(page, row: int, column: str):
    """A cell of the Library tab's table (the rows are the library's tracks in order)."""
    from music_mood.web.views import LIBRARY_COLUMNS

    return page.locator(f"#library [data-testid=cell-{row}-{LIBRARY_COLUMNS.index(column)}]")


def cell_text(cell) -> str:
    return cell.locator("span").first.inner_text().strip()


def listed_files(page) -> list[str]:
    return page.locator("#tracks li.track").evaluate_all("items => items.map(li => li.dataset.file)")


def ask_by_words(page, words: str, topk: int, count: int) -> list[str]:
    """Recommend by `words` alone, `topk` tracks; waits for `count` players and returns their files in order."""
    page.get_by_role("tab", name="Recommend").click()
    page.fill("#text textarea", words)
    page.locator("#topk input[type=number]").fill(str(topk))
    page.locator("#topk input[type=number]").press("Enter")
    page.click("#recommend")
    page.wait_for_function(f"document.querySelectorAll('#tracks audio').length === {count}", timeout=WAIT_MS)
    page.wait_for_timeout(500)  # the list is replaced at once: no older list of the same length is read
    return listed_files(page)


def test_editing_a_mood_cell_corrects_the_track(page, app):
    paths = LibraryPaths.at(app.library)
    before = load_database(paths)
    row, track = 1, before.tracks[1]
    page.get_by_role("tab", name="Library").click()
    cell = library_cell(page, row, "mood")
    cell.wait_for(timeout=WAIT_MS)
    assert cell_text(cell) == track["mood"]
    cell.dblclick()
    page.keyboard.press("Control+A")
    page.keyboard.type("edited in browser")
    page.keyboard.press("Enter")
    page.locator("#library-status").get_by_text(f"Set the mood of {track['file_path']}").wait_for(timeout=WAIT_MS)

    expected = [dict(t) for t in before.tracks]
    expected[row]["mood"] = "edited in browser"
    assert load_database(paths).tracks == expected  # that field of that track, nothing else
    assert cell_text(library_cell(page, row, "mood")) == "edited in browser"
    assert cell_text(library_cell(page, row, "file")) == track["file_path"]
    # The filter offers the new mood at once, and it finds that track.
    page.get_by_role("tab", name="Recommend").click()
    page.locator("#moods input").fill("edited in")
    page.get_by_role("option", name="edited in browser").click(timeout=WAIT_MS)
    assert ask_by_words(page, "anything", 20, 1) == [track["file_path"]]


def test_removing_a_track_in_the_page_moves_its_file_to_removed(page, app):
    paths = LibraryPaths.at(app.library)
    before = load_database(paths)
    track = before.tracks[0]
    page.get_by_role("tab", name="Library").click()
    library_cell(page, 0, "file").click()  # a track's file, clicked, joins the tracks to remove
    page.locator("#remove-tracks").get_by_text(track["file_path"]).wait_for(timeout=WAIT_MS)
    page.click("#remove")
    question = page.locator("#remove-question")
    question.get_by_text("Remove 1 track(s) from the library?").wait_for(timeout=WAIT_MS)
    assert track["file_path"] in question.inner_text() and "removed/" in question.inner_text()
    assert load_database(paths).tracks == before.tracks  # the first click only asks

    page.click("#remove-yes")
    page.locator("#library-status").get_by_text("Removed 1 track(s)").wait_for(timeout=WAIT_MS)
    moved_to = app.library / "removed" / track["file_path"].removeprefix("processed_music/")
    assert not (app.library / track["file_path"]).exists()
    assert moved_to.read_bytes() and f"removed/{track['file_path'].removeprefix('processed_music/')}" in \
        page.locator("#library-status").inner_text()
    after = load_database(paths)
    assert [t["sha256"] for t in after.tracks] == [t["sha256"] for t in before.tracks[1:]]
    page.wait_for_function("n => document.querySelectorAll('#library [data-row][data-col=\"0\"]').length === n",
                           arg=len(after), timeout=WAIT_MS)
    assert page.locator("#library").get_by_text(track["file_path"]).count() == 0
    assert not page.locator("#remove-question").is_visible()
    LIBRARY_SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(LIBRARY_SCREENSHOT), full_page=True)

    listed = ask_by_words(page, "anything", 20, min(20, len(after)))
    assert track["file_path"] not in listed


def test_an_edit_of_a_track_removed_meanwhile_says_so_once_and_shows_the_library(page, app):
    """The page's table is older than the library: a track it shows was removed (music_to_vector.py --remove)
    behind its back. Editing that track's cell says so once, and the status line, the note and the table then show
    the library as stored, numbered."""
    paths = LibraryPaths.at(app.library)
    before = load_database(paths)
    page.get_by_role("tab", name="Library").click()
    page.locator("#library-status").get_by_text(f"The library holds {len(before)} track(s).").wait_for(
        timeout=WAIT_MS)
    row, track = 1, before.tracks[1]
    cell = library_cell(page, row, "mood")
    cell.wait_for(timeout=WAIT_MS)
    remove_tracks(paths, [track["file_path"]])  # what python music_to_vector.py --remove does
    after = load_database(paths)

    cell.dblclick()
    page.keyboard.press("Control+A")
    page.keyboard.type("too late")
    page.keyboard.press("Enter")
    page.wait_for_function("n => document.querySelectorAll('#library [data-row][data-col=\"0\"]').length === n",
                           arg=len(after), timeout=WAIT_MS)  # the failure's answer has come

    status = page.locator("#library-status")
    # Gradio gathers equal messages into one toast ("Error (2)"): count the messages.
    errors = page.locator("[data-testid=toast-body].error [data-testid=toast-text]").all_inner_texts()
    assert len(errors) == 1 and errors[0].startswith(f"{track['file_path']} is no longer in the library")
    assert status.inner_text().strip() == f"The library holds {len(after)} track(s)."
    assert [cell_text(library_cell(page, i, "#")) for i in range(len(after))] == \
        [str(i) for i in range(1, len(after) + 1)]
    assert [cell_text(library_cell(page, i, "file")) for i in range(len(after))] == \
        [t["file_path"] for t in after.tracks]
    assert load_database(paths).tracks == after.tracks  # the edit changed nothing


def test_the_variety_option_caps_the_tracks_of_one_artist(page, app, default_models):
    paths = LibraryPaths.at(app.library)
    band = load_database(paths).tracks[:3]  # the sample tracks name no artist: three get one
    set_fields(paths, [(t["id"], "artist", "One Band") for t in band])
    try:
        db = load_database(paths)
        topk = min(20, len(db))
        page.get_by_role("tab", name="Recommend").click()
        page.locator("#options").get_by_text("Options").click()
        for cap in (1, 0):
            page.locator("#max-per-artist input[type=number]").fill(str(cap))
            page.locator("#max-per-artist input[type=number]").press("Enter")
            expected = recommend(None, default_models[1], db, text="anything", topk=topk, max_per_artist=cap)
            listed = ask_by_words(page, "anything", topk, len(expected.results))
            assert listed == [t.file_path for t in expected.results]
            assert sum(path in {t["file_path"] for t in band} for path in listed) == (1 if cap else len(band))
    finally:
        set_fields(paths, [(t["id"], "artist", t.get("artist", "")) for t in band])
