"""What the page says when a request fails: the core's errors a user can act on, as one gr.Error message each
(user_errors), logged as one line instead of a traceback (logged_as_one_line)."""
from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path

import gradio as gr

from music_mood.database import DatabaseError, EmptyLibraryError, UnknownTrackError
from music_mood.edit import FieldValueError
from music_mood.images import ImageError
from music_mood.models import ModelLoadError
from music_mood.playlists import PlaylistNameError
from music_mood.recommendation import NoQueryError
from music_mood.remote import address_forms
from music_mood.render import RenderError
from music_mood.saved_playlists import PlaylistError
from music_mood.soundtrack import NoOtherTrackError
from music_mood.storage import LibraryBusyError


@contextlib.contextmanager
def user_errors(uploads: Iterable = (), *, change: bool = False, soundtrack: bool = False,
                servers: dict[str, str] | None = None):
    """The core's errors that the user can act on, raised as one gr.Error each with a message for them (see
    user_message); the server keeps serving, and real faults pass through with their traceback.

    `uploads` are the request's uploaded files: a message names each by its file name, never by its temporary path
    on the server. With `change` the request changes the library, and a refusal says that nothing was changed (the
    core refuses a change whole). With `soundtrack` the request plans or renders a soundtrack: the planner's
    ValueError and IndexError are the user's too (no photo readable, how many, how long, a scene there is not), and
    a message is a sentence, capital first, as the Slideshow tab shows them. Elsewhere those two are faults.
    `servers` ({address: label}, LiveLibrary.server_labels) are the servers the request may reach: a message (a
    song that did not download, a server that is down) names each by its label, never by its address or user.
    """
    names = {str(upload): Path(str(upload)).name for upload in uploads}
    names |= {form: label for address, label in (servers or {}).items() for form in address_forms(address)}
    try:
        yield
    except Exception as e:
        message = user_message(e, names, change=change, soundtrack=soundtrack)
        if message is None:
            raise
        raise gr.Error(message) from e


def user_message(error: Exception, names: dict[str, str], *, change: bool = False,
                 soundtrack: bool = False) -> str | None:
    """What the page says about `error` (user_errors' options), or None when it is not the user's to fix (a fault,
    or already a gr.Error). `names` maps uploads' temporary paths to the file names the user knows them by."""
    text = str(error)
    for path, name in names.items():
        text = text.replace(path, name)
    said = text[:1].upper() + text[1:].rstrip(".") + "."
    if isinstance(error, gr.Error):
        return None
    if isinstance(error, UnknownTrackError):
        return nothing_changed(str(error.args[0])) if change else text
    if change and isinstance(error, (DatabaseError, LibraryBusyError, OSError)):
        return f"{text}; nothing was changed."
    if change and isinstance(error, FieldValueError):
        return f"{said.removesuffix('.')}; nothing was changed."
    if isinstance(error, EmptyLibraryError):  # no tracks, or none left after the filters
        return said if soundtrack else text
    if isinstance(error, DatabaseError):
        return f"The music database cannot be used: {error}"
    if isinstance(error, (LibraryBusyError, ModelLoadError)):
        return text
    if isinstance(error, ImageError):
        return f"That file is not a photo we can read: {text}."
    if isinstance(error, NoQueryError):
        return "Upload a photo (or type some words) first."
    if isinstance(error, PlaylistNameError):
        return f"Playlist name: {text}; nothing was saved."
    if isinstance(error, PlaylistError):  # says that nothing was saved; may start with a path (playlists/...)
        return text
    if isinstance(error, NoOtherTrackError):  # a LookupError, as IndexError is
        return f"{said} Plan the soundtrack again, or add music in the Library tab."
    if soundtrack and isinstance(error, (ValueError, IndexError)):
        return said
    if isinstance(error, RenderError):
        return f"The soundtrack could not be rendered: {said}"
    return None


def nothing_changed(message: str) -> str:
    """`message` of a refused change, saying (once) that nothing was changed."""
    return message if message.endswith("nothing was changed") else f"{message}; nothing was changed"


def logged_as_one_line(handler):
    """`handler` with the gr.Error it raises logged as one line on stderr instead of Gradio's full traceback.

    gr.Error is the page's answer to something the user can fix (no photo, a filter matching nothing, a file
    that is not audio): a traceback would bury the real faults, which still get theirs.
    """

    def log(e: gr.Error) -> None:
        e.print_exception = False
        print("User error: " + " ".join(str(e.message).split()), file=sys.stderr)

    if inspect.iscoroutinefunction(handler):  # Gradio awaits it: so must the wrapper, or it gets a coroutine
        @functools.wraps(handler)
        async def logged_async(*args, **kwargs):
            try:
                return await handler(*args, **kwargs)
            except gr.Error as e:
                log(e)
                raise

        return logged_async

    @functools.wraps(handler)  # Gradio reads the handler's parameters (gr.Progress) through the wrapper
    def logged(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error as e:
            log(e)
            raise

    return logged
