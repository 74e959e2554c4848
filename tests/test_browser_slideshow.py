"""The Slideshow tab in a real browser (Debian's Chromium driven by Playwright): five photos in, put in order and
reordered by dragging, the plan shown scene by scene, the video plays and seeks, the downloads answer with their
types, a scene's next-best button replaces its track, and Cancel stops a long soundtrack."""
from __future__ import annotations

import json
import shutil
from urllib.parse import urlsplit

import pytest

from music_mood.library import LibraryPaths, load_database
from music_mood.soundtrack import replace_scene_track
from tests.app_server import get, running_copy
from tests.conftest import ROOT, WAIT_MS, open_page
from tests.test_app_slideshow import plan_of

SCREENSHOT = ROOT / "test-artifacts" / "slideshow.png"
TYPES = {"mp4": {"video/mp4"}, "m4a": {"audio/mp4", "audio/x-m4a"},
         "m3u8": {"audio/x-mpegurl", "application/vnd.apple.mpegurl"}, "json": {"application/json"},
         "otio": {"application/json"}, "xml": {"application/xml", "text/xml"}, "edl": {"text/plain"},
         "wav": {"audio/wav", "audio/x-wav"}}
VIDEO = "document.querySelector('#slideshow video')"


@pytest.fixture(scope="module")
def app(built_library, checkpoints, tmp_path_factory, shared_exports):
    with running_copy(built_library, checkpoints, tmp_path_factory, shared_exports, "browser-slideshow") as running:
        yield running


@pytest.fixture
def page(browser, app):
    with open_page(browser, app.url, tab="Slideshow") as page:
        yield page


def add_photos(page, paths) -> None:
    page.locator("#slideshow-photos input[type=file]").set_input_files([str(p) for p in paths])
    page.wait_for_function(f"document.querySelectorAll('#slideshow-photos tr.file').length === {len(paths)}",
                           timeout=WAIT_MS)


LISTED = "[...document.querySelectorAll('#slideshow-photos td.filename')].map(c => c.ariaLabel)"


def listed_photos(page) -> list[str]:
    return page.evaluate(LISTED)


def wait_until_listed(page, names: list[str]) -> None:
    """Wait for the photo list to read `names`: the upload event sorts the rows after they first appear, in an
    order of their own, so reading them at once races with it (it lost on a loaded machine)."""
    page.wait_for_function(f"names => JSON.stringify({LISTED}) === JSON.stringify(names)", arg=names,
                           timeout=WAIT_MS)


def make_soundtrack(page, previous_video: str | None = None) -> str:
    """Press the button and wait for the new video; returns its URL."""
    page.click("#make-soundtrack")
    page.wait_for_function(f"old => {VIDEO} && {VIDEO}.getAttribute('src') !== old", arg=previous_video,
                           timeout=WAIT_MS)
    return page.locator("#slideshow video").get_attribute("src")


def test_five_photos_become_a_slideshow_that_plays_seeks_and_downloads(page, app, photos):
    mp4_ranges = []
    page.on("response", lambda r: mp4_ranges.append((r.status, r.request.headers.get("range")))
            if urlsplit(r.url).path.endswith("/slideshow.mp4") else None)
    add_photos(page, [photos[name] for name in ("rocket.jpg", "coffee.png", "motorcycle_left.png", "chelsea.png",
                                                "astronaut.png")])
    by_name = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg"]
    wait_until_listed(page, by_name)  # file-name order
    assert listed_photos(page) == by_name
    rows = page.locator("#slideshow-photos tr.file")
    rows.nth(4).drag_to(rows.nth(0))  # the rocket first: the slideshow follows the list
    order = ["rocket.jpg", "astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png"]
    assert listed_photos(page) == order

    video = make_soundtrack(page)
    assert page.locator("#slideshow figure img").evaluate_all("images => images.map(i => i.alt)") == order
    # Cut on the beat (the box is on by default): within a beat of 5 x 4 s, each scene with its tempo and bar.
    assert page.locator("#beat-sync input[type=checkbox]").is_checked()
    page.wait_for_function("/^A soundtrack of 0:(19|20|21) for 5 photos/.test("
                           "document.querySelector('#slideshow-status').innerText)", timeout=WAIT_MS)
    assert "BPM, from bar " in page.locator("#slideshow .piece").first.inner_text()

    # The video element: loaded, as long as the photos, seekable (the server answers Range requests), playing.
    page.wait_for_function(f"{VIDEO}.readyState >= 1", timeout=WAIT_MS)
    duration, seekable_end = page.evaluate(f"[{VIDEO}.duration, {VIDEO}.seekable.end(0)]")
    assert duration == pytest.approx(5 * 4.0, abs=0.6) and seekable_end == pytest.approx(duration, abs=0.15)
    page.evaluate(f"{VIDEO}.muted = true; {VIDEO}.currentTime = 13")
    page.wait_for_function(f"!{VIDEO}.seeking && Math.abs({VIDEO}.currentTime - 13) < 0.1", timeout=WAIT_MS)
    page.evaluate(f"{VIDEO}.play()")
    page.wait_for_function(f"{VIDEO}.currentTime > 13.5 && !{VIDEO}.paused", timeout=WAIT_MS)
    assert any(status == 206 and bytes_ for status, bytes_ in mp4_ranges)

    # The downloads, the mixed soundtrack's player and each scene's own stretch of music.
    links = {link.get_attribute("data-kind"): link.get_attribute("href")
             for link in page.locator("#slideshow a.download").all()}
    assert set(links) == set(TYPES) and links["mp4"] == video
    for kind, url in links.items():
        response = get(app, url)
        assert response.status == 200 and response.getheader("content-type").split(";")[0] in TYPES[kind], kind
    assert page.locator("#slideshow .mix audio").get_attribute("src") == links["m4a"]
    plan = plan_of(json.loads(get(app, links["json"]).body), app.library)  # served: it names no path of the server
    assert [photo.name for photo in plan.photos] == order and plan.total_s == pytest.approx(duration, abs=0.15)
    pieces = [piece for scene in plan.scenes for piece in scene.pieces]
    players = page.locator("#slideshow .piece audio")
    assert players.count() == len(pieces) == page.locator("#slideshow .piece").count()
    ids = {t["file_path"]: t["id"] for t in load_database(LibraryPaths.at(app.library)).tracks}
    for i, piece in enumerate(pieces):
        src = urlsplit(players.nth(i).get_attribute("src"))
        assert src.path == f"/track/{ids[piece.file_path]}"  # by its id: no path of the server in the page
        assert src.fragment == f"t={piece.track_start_s:.2f},{piece.track_end_s:.2f}"
    page.evaluate(f"{VIDEO}.pause(); {VIDEO}.currentTime = 9")  # the cat (photo 3 of 5), for the screenshot
    page.wait_for_function(f"!{VIDEO}.seeking && {VIDEO}.readyState >= 2", timeout=WAIT_MS)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # The first scene's next-best button: that scene's track is replaced, the rest stays, the old files go.
    db = load_database(LibraryPaths.at(app.library))
    expected = replace_scene_track(db, plan, 0)
    page.locator("#slideshow button.next-best").first.click()
    page.wait_for_function(f"old => {VIDEO}.getAttribute('src') !== old", arg=video, timeout=WAIT_MS)
    assert page.locator("#slideshow .piece").first.get_attribute("data-file") == \
        expected.scenes[0].pieces[0].file_path
    new_plan = json.loads(get(app, page.locator("#slideshow a.download[data-kind=json]").get_attribute("href")).body)
    assert new_plan == expected.to_served_dict()
    assert get(app, video).status == 404 and get(app, page.locator("#slideshow video").get_attribute("src")) \
        .status == 200


def test_cancel_stops_a_long_soundtrack_and_keeps_the_one_shown(page, app, photos, tmp_path):
    add_photos(page, [photos["chelsea.png"], photos["coffee.png"]])
    video = make_soundtrack(page)
    folders = sorted((app.work / "tmp").glob("music-mood-renders-*/*"))
    page.locator("#slideshow-photos button[aria-label='Clear']").first.click()
    copies = []
    for i in range(20):  # twenty photos of 15 s: five minutes of video, time enough to press Cancel
        copies.append(tmp_path / f"photo {i:02d}.png")
        shutil.copyfile(photos[("chelsea.png", "coffee.png", "rocket.jpg")[i % 3]], copies[-1])
    add_photos(page, copies)
    page.locator("#slideshow-seconds input[type=number]").fill("15")
    page.locator("#slideshow-seconds input[type=number]").press("Enter")

    page.click("#make-soundtrack")
    page.locator("#slideshow").get_by_text("Rendering video").wait_for(timeout=WAIT_MS)  # its progress
    page.click("#cancel-soundtrack")
    page.locator("#slideshow-status").get_by_text("Cancelled").wait_for(timeout=WAIT_MS)
    page.wait_for_function("!document.querySelector('#slideshow .progress-text')", timeout=WAIT_MS)
    assert page.locator("#slideshow video").get_attribute("src") == video  # the one shown stays, and plays
    assert get(app, video).status == 200
    assert sorted((app.work / "tmp").glob("music-mood-renders-*/*")) == folders  # nothing of the cancelled one
