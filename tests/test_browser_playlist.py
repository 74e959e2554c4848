""""Save as playlist" in a real browser (Debian's Chromium driven by Playwright): the tracks the Recommend tab shows,
and the Slideshow tab's soundtrack, saved as LIBRARY/playlists/NAME.m3u8, which lists them in order; asked before
there is anything to save, the page says what to do first."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from music_mood.library import LibraryPaths, load_database
from tests.app_server import running_copy
from tests.conftest import WAIT_MS, open_page
from tests.test_save_playlist import assert_lists, playlists_folder


@pytest.fixture(scope="module")
def app(built_library, checkpoints, tmp_path_factory, shared_exports):
    with running_copy(built_library, checkpoints, tmp_path_factory, shared_exports, "browser-playlist") as running:
        yield running


def shown_tracks(page, selector: str, library: Path) -> list[str]:
    """The library file paths of the players under `selector`, in the page's order (from the track ids of their
    /track/ URLs)."""
    sources = page.locator(f"{selector} audio").evaluate_all("players => players.map(p => p.getAttribute('src'))")
    paths = {t["id"]: t["file_path"] for t in load_database(LibraryPaths.at(library)).tracks}
    return [paths[urlsplit(src).path.removeprefix("/track/")] for src in sources]


def save_as(page, prefix: str, name: str) -> str:
    """Type `name`, press "Save as playlist" and wait for the status; returns it."""
    page.locator(f"#{prefix}-playlist-name textarea, #{prefix}-playlist-name input").first.fill(name)
    page.click(f"#{prefix}-save-playlist")
    status = page.locator(f"#{prefix}-playlist-status")
    status.get_by_text("Saved the playlist").wait_for(timeout=WAIT_MS)
    return status.inner_text()


def test_recommend_tab_saves_the_tracks_it_shows(browser, app, photos):
    with open_page(browser, app.url) as page:
        page.click("#recommend-save-playlist")  # nothing recommended yet
        page.get_by_text("Get some recommendations first").first.wait_for(timeout=WAIT_MS)
        assert playlists_folder(app.library) == {}

        page.locator("#photo input[type=file]").set_input_files(str(photos["chelsea.png"]))
        page.wait_for_function("document.querySelectorAll('#tracks audio').length > 0", timeout=WAIT_MS)
        shown = shown_tracks(page, "#tracks", app.library)
        status = save_as(page, "recommend", "Cat nap ♪")
        assert status == (f"Saved the playlist “Cat nap ♪”: {len(shown)} track(s) in playlists/Cat nap ♪.m3u8 "
                          f"in the library folder.")
        assert_lists(app.library / "playlists" / "Cat nap ♪.m3u8", app.library, shown)


def test_slideshow_tab_saves_its_soundtracks_tracks_in_play_order(browser, app, photos):
    with open_page(browser, app.url, tab="Slideshow") as page:
        album = [photos[name] for name in ("coffee.png", "rocket.jpg", "astronaut.png")]
        page.locator("#slideshow-photos input[type=file]").set_input_files([str(p) for p in album])
        page.wait_for_function("document.querySelectorAll('#slideshow-photos tr.file').length === 3",
                               timeout=WAIT_MS)
        page.click("#make-soundtrack")
        page.wait_for_selector("#slideshow video", timeout=WAIT_MS)
        played = page.locator("#slideshow .piece").evaluate_all("pieces => pieces.map(p => p.dataset.file)")
        assert played
        save_as(page, "slideshow", "Album")
        assert_lists(app.library / "playlists" / "Album.m3u8", app.library, list(dict.fromkeys(played)))
