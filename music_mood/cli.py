"""The command-line pieces the three programs share: help formatting, number validation, the model and library
options, and stop signals."""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys

from music_mood.engines import (
    BACKEND_ENV,
    BACKENDS,
    PRECISION_ENV,
    PRECISIONS,
    ModelChoice,
    default_backend,
    default_precision,
)
from music_mood.library import HOME_ENV
from music_mood.loudness import check_loudness
from music_mood.models import BLIP_MODEL_ENV, CLAP_MODEL_ENV, ModelLoadError, default_blip_model, default_clap_model
from music_mood.search import BpmRange, parse_bpm_range


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it has none (None, "", or an off switch) or its help already says it."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == "" \
                or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def int_argument(low: int, high: int | None = None, noun: str = "a whole number"):
    """An argparse `type` for a whole number from `low` (to `high`), refusing anything else with a plain message."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if high is None and value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value
    return parse


def _number(text: str) -> float:
    """`text` as a float, or the ArgumentTypeError the argument types below raise."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def unit_interval(text: str) -> float:
    """An argparse `type` for a number from 0 to 1."""
    value = _number(text)
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value:g} is not between 0 and 1")
    return value


def seconds_argument(limit: float):
    """An argparse `type` for a length in seconds greater than 0 and at most `limit`."""
    def seconds(text: str) -> float:
        value = _number(text)
        if not (math.isfinite(value) and value > 0):  # also refuses nan and inf
            raise argparse.ArgumentTypeError(f"{value:g} is not a length in seconds greater than 0")
        if value > limit:
            raise argparse.ArgumentTypeError(f"{value:g} s is more than the limit of {limit:g} s")
        return value

    return seconds


def loudness_argument(text: str) -> float:
    """An argparse `type` for a loudness target in LUFS, within what loudness.check_loudness allows."""
    value = _number(text)
    try:
        return check_loudness(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def bpm_range(text: str) -> BpmRange:
    """An argparse `type` for a tempo range (search.parse_bpm_range)."""
    try:
        return parse_bpm_range(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_arguments(parser: argparse.ArgumentParser, blip: bool = True) -> None:
    """The model options every command shares: --blip-model (if it captions), --clap-model, --precision."""
    if blip:
        parser.add_argument("--blip-model", default=default_blip_model(),
                            help=f"BLIP captioning checkpoint: hub id or local directory (env {BLIP_MODEL_ENV})")
    parser.add_argument("--clap-model", default=default_clap_model(),
                        help=f"CLAP checkpoint: hub id or local directory (env {CLAP_MODEL_ENV})")
    parser.add_argument("--precision", choices=PRECISIONS, default=default_precision(),
                        help=f"model precision (env {PRECISION_ENV}); auto = per stage, the one measured fastest on "
                             "this kind of CPU within the fidelity gate (music_mood/engines.py); fp32 = exact; int8 = "
                             "quantised weights (faster, within the fidelity gate)")
    parser.add_argument("--backend", choices=BACKENDS, default=default_backend(),
                        help=f"inference engine (env {BACKEND_ENV}); auto = per stage, the one measured fastest on "
                             "this kind of CPU (music_mood/engines.py: mostly ONNX Runtime, exported once per "
                             "checkpoint into the cache folder), torch on a GPU and for --precision fp32/bf16; "
                             "torch or onnx runs every stage on that engine")


def model_choice(args: argparse.Namespace) -> ModelChoice:
    """The ModelChoice of the parsed --precision and --backend; ModelLoadError, which the programs print as one
    "Error: …" line, for a combination no engine runs (bf16 on ONNX Runtime) or a bad value from the environment
    (argparse checks the flags, not their defaults)."""
    try:
        return ModelChoice(args.precision, args.backend)
    except ValueError as e:
        raise ModelLoadError(str(e)) from e


def add_library_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say where the library is: --library, --vectors, --meta (see LibraryPaths.at)."""
    parser.add_argument("--library", default=None,
                        help=f"library folder holding new_music/, processed_music/ and the database "
                             f"(default: ${HOME_ENV}, else this program's folder; ~/music-mood when installed "
                             f"with pip)")
    parser.add_argument("--vectors", default=None, help="database matrix (default: LIBRARY/music_database.npy)")
    parser.add_argument("--meta", default=None,
                        help="database metadata (default: LIBRARY/music_database_metadata.json)")


def quiet_request_logs() -> None:
    """Keep httpx's line per request (a Subsonic server's every song listed, downloaded or played) out of a
    program's output: a library imported on the way (ONNX Runtime's quantizer) may set the root logger to INFO.
    Its warnings still show."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def new_parser(prog: str, description: str, example: str) -> argparse.ArgumentParser:
    """A program's parser as all three are made: its help formatted by HelpFormatter, ending with an example."""
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter,
                                   epilog=f"example: {example}")


def print_lines(lines) -> None:
    """Print `lines` to stdout as they come. A reader that stops early (`| head`) ends the output quietly: the rest
    is dropped, with no error (what a user of a Unix tool expects)."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush has nowhere to fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class StopSignals:
    """Within a `with` block, SIGINT (Ctrl-C) and SIGTERM (kill, a service manager) are one request to stop; the
    handlers from before the block are put back after it. Used from the main thread only (as signal.signal is).

    `signum` is the first of them received (None until then), `exit_status` the shell's 128 + its number. With
    raise_interrupt (a program whose main thread does the work) each also raises KeyboardInterrupt there, so that
    SIGTERM takes Ctrl-C's path: the `except BaseException` clean-ups of storage remove the temporary files. A
    program whose main thread only waits (the server) passes False and polls `requested`: an exception thrown into
    whatever the main thread happens to run can land in a weakref callback or a __del__, where Python prints
    "Exception ignored" and runs on, and the stop is lost.
    """

    def __init__(self, raise_interrupt: bool = True):
        self.raise_interrupt = raise_interrupt
        self.signum: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_status(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        if self.raise_interrupt:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        for which in (signal.SIGINT, signal.SIGTERM):
            self._previous[which] = signal.signal(which, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for which, handler in self._previous.items():
            signal.signal(which, handler)
