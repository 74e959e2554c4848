"""BeatNet's beat and downbeat activations (Heydari, Cwitkowitz and Duan, ISMIR 2021; CC BY 4.0): for each 20 ms
frame of a track, the probability that a beat and that a downbeat falls on it.

Only BeatNet's weights are taken from its package (`pip install --no-deps BeatNet==1.1.3`): its Python modules import
pyaudio and madmom when imported, and madmom's release does not build on Python 3.11. So its input features, which it
computes with madmom, are computed here in NumPy the way madmom computes them (madmom's framing, STFT, logarithmic
filterbank and spectral difference; BSD licence, definitions followed step by step), and its small network (a
convolution over each frame's features, two LSTM layers) is rewritten below as an ONNX graph made from its state
dicts, read without torch. The three released models (each trained leaving one corpus out: GTZAN, Ballroom, the Rock
corpus) are averaged.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

FPS = 50  # activation frames per second (BeatNet's 20 ms hop at 22 050 Hz)
SAMPLE_RATE = 22_050  # the rate BeatNet was trained at
HOP = SAMPLE_RATE // FPS  # 441 samples
FRAME_SIZE = int(64 * 0.001 * SAMPLE_RATE)  # 1411 samples (64 ms), BeatNet's window; odd, and also its FFT size
NUM_BINS = FRAME_SIZE // 2  # madmom keeps fft_size >> 1 bins: 705
BANDS_PER_OCTAVE = 24
FMIN, FMAX = 30.0, 17_000.0  # the filterbank's range (Hz)
A4 = 440.0  # the logarithmic bands are aligned on it
# madmom's _diff_frames(diff_ratio=0.5): the Hann window first passes half its height 352.5 samples before its
# centre, under one hop, so each frame is compared with the one just before it.
DIFF_FRAMES = 1
CHUNK_FRAMES = 2048  # frames windowed and transformed at a time: ~23 MB of float64 however long the track
NUM_FEATURES = 272  # 136 log bands and their positive differences
KERNEL = 10  # the convolution's width along a frame's features
HIDDEN = 150
WEIGHTS = ("model_1_weights.pt", "model_2_weights.pt", "model_3_weights.pt")  # GTZAN, Ballroom, Rock corpus left out
INSTALL = "pip install --no-deps BeatNet==1.1.3"


def available() -> bool:
    """True when BeatNet's three weight files are installed."""
    folder = _weights_folder()
    return folder is not None and all((folder / name).is_file() for name in WEIGHTS)


def activations(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 audio at any rate -> float32 (frames, 2): [beat, downbeat] probabilities, the mean of BeatNet's
    three models; frame i is at i / FPS seconds. The classes exclude each other, as madmom's downbeat activations do:
    a downbeat is not also counted as a beat, so a beat of either kind is the sum of the two columns. Raises
    FileNotFoundError when BeatNet's weights are not installed."""
    features = spectral_features(_resampled(audio, sample_rate))
    if len(features) == 0:  # an LSTM takes no empty sequence
        return np.zeros((0, 2), np.float32)
    return _session().run(None, {"features": features})[0]


def _resampled(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    if sample_rate == SAMPLE_RATE:
        return audio
    return librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)


def spectral_features(audio: np.ndarray) -> np.ndarray:
    """BeatNet's input: mono float32 audio at SAMPLE_RATE -> float32 (frames, NUM_FEATURES), the log filtered
    spectrogram log10(1 + S) of each frame beside its rise since the frame before (rises only; zero for the first)."""
    bands = np.log10(_magnitudes(audio) @ _filterbank() + np.float32(1))
    rise = np.zeros_like(bands)
    rise[DIFF_FRAMES:] = np.maximum(bands[DIFF_FRAMES:] - bands[:-DIFF_FRAMES], 0)
    return np.hstack([bands, rise])


def _magnitudes(audio: np.ndarray) -> np.ndarray:
    """float32 (frames, NUM_BINS) STFT magnitudes, framed as madmom frames a signal: frame i is centred on sample
    i * HOP (zeros outside the signal), and frames continue while their centre lies in the signal, ceil(n / HOP) of
    them. The float32 samples are windowed and transformed in float64 and the spectrum kept as complex64, as madmom
    does; its FFT size is the odd frame size, and it drops the last of the rfft's bins."""
    num_frames = -(-len(audio) // HOP)
    if num_frames == 0:
        return np.zeros((0, NUM_BINS), np.float32)
    left = FRAME_SIZE // 2
    right = max(0, (num_frames - 1) * HOP + FRAME_SIZE - left - len(audio))
    padded = np.pad(np.asarray(audio, np.float32), (left, right))
    windows = np.lib.stride_tricks.sliding_window_view(padded, FRAME_SIZE)[::HOP][:num_frames]
    window = np.hanning(FRAME_SIZE)
    out = np.empty((num_frames, NUM_BINS), np.float32)
    for start in range(0, num_frames, CHUNK_FRAMES):
        spectrum = np.fft.rfft(windows[start:start + CHUNK_FRAMES] * window, axis=1)[:, :NUM_BINS]
        out[start:start + CHUNK_FRAMES] = np.abs(spectrum.astype(np.complex64))
    return out


@functools.lru_cache(maxsize=1)
def _filterbank() -> np.ndarray:
    """float32 (NUM_BINS, 136): madmom's LogarithmicFilterbank(24 bands an octave, 30 Hz to 17 kHz, normalised,
    unique filters), overlapping triangles between log-spaced centres on A4, each of area 1."""
    # madmom's bin frequencies assume an even FFT of 2 * NUM_BINS (fftfreq(1410)), not the odd 1411 it computes.
    bin_frequencies = np.fft.fftfreq(2 * NUM_BINS, 1.0 / SAMPLE_RATE)[:NUM_BINS]
    left = np.floor(np.log2(FMIN / A4) * BANDS_PER_OCTAVE)
    right = np.ceil(np.log2(FMAX / A4) * BANDS_PER_OCTAVE)
    frequencies = A4 * 2.0 ** (np.arange(left, right) / BANDS_PER_OCTAVE)
    frequencies = frequencies[np.searchsorted(frequencies, FMIN):]
    frequencies = frequencies[:np.searchsorted(frequencies, FMAX, "right")]
    # Each frequency to its nearest bin (a tie goes to the upper one); bands that share a bin at low frequencies,
    # where the bins are wider than the bands, are kept once.
    indices = np.clip(bin_frequencies.searchsorted(frequencies), 1, NUM_BINS - 1)
    lower, upper = bin_frequencies[indices - 1], bin_frequencies[indices]
    bins = np.unique(indices - (frequencies - lower < upper - frequencies))
    bank = np.zeros((NUM_BINS, len(bins) - 2), np.float32)
    for band, (start, centre, stop) in enumerate(zip(bins[:-2], bins[1:-1], bins[2:], strict=True)):
        if stop - start < 2:  # madmom's handling of a filter too narrow for a slope: one bin
            centre, stop = start, start + 1
        rising = np.linspace(0, 1, centre - start, endpoint=False)
        falling = np.linspace(1, 0, stop - centre, endpoint=False)  # from the centre, without the stop bin
        triangle = np.concatenate([rising, falling]).astype(np.float32)
        bank[start:stop, band] = triangle / triangle.sum()
    return bank


def _weights_folder() -> Path | None:
    """BeatNet's models/ folder, found without importing the package (nothing of it is run)."""
    spec = importlib.util.find_spec("BeatNet")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@functools.lru_cache(maxsize=1)
def _session():
    """ONNX Runtime running BeatNet's three networks side by side on one thread (a build reads the next track in a
    thread beside the embedding, which has the cores; ONNX Runtime, not torch, so that a build on ONNX Runtime
    never imports torch). The graph is made here from the weights (_network_graph). Raises FileNotFoundError when
    the weights are not installed."""
    from music_mood.ort import onnx_session

    if not available():
        raise FileNotFoundError(f"BeatNet's weights are not installed: {INSTALL}")
    graph = _network_graph([read_state_dict(_weights_folder() / name) for name in WEIGHTS])
    return onnx_session(graph.SerializeToString(), threads=1)


def _network_graph(networks: list[dict]):
    """An ONNX graph of BeatNet's BDA(272, 150, 2) for each state dict, their softmaxes averaged: features
    (frames, NUM_FEATURES) -> (frames, 2) [beat, downbeat]. Each network: a two-channel convolution along each
    frame's features, ReLU, max-pooled by 2, a linear layer, two unidirectional LSTM layers from zero state (BeatNet's
    own class carries its state from one track into the next: not copied), a linear layer to [beat, downbeat, no
    beat] and a softmax. torch orders an LSTM's gates input, forget, cell, output; ONNX input, output, forget, cell."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights = [], []

    def constant(name: str, value: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=value.dtype), name))
        return name

    onnx_gates = np.concatenate([np.arange(g * HIDDEN, (g + 1) * HIDDEN) for g in (0, 3, 1, 2)])
    outputs = []
    for n, w in enumerate(networks):
        def node(op, inputs, **attributes):
            out = f"n{n}_{len(nodes)}"
            nodes.append(helper.make_node(op, inputs, [out], **attributes))
            return out

        x = node("Unsqueeze", ["features", constant(f"n{n}_axis1", np.array([1], np.int64))])
        x = node("Conv", [x, constant(f"n{n}_conv_w", w["conv1.weight"]), constant(f"n{n}_conv_b", w["conv1.bias"])])
        x = node("MaxPool", [node("Relu", [x])], kernel_shape=[2], strides=[2])
        x = node("Flatten", [x], axis=1)
        x = node("Gemm", [x, constant(f"n{n}_l0_w", w["linear0.weight"]), constant(f"n{n}_l0_b", w["linear0.bias"])],
                 transB=1)
        for layer in (0, 1):  # (frames, 1, HIDDEN) in, Y (frames, 1, 1, HIDDEN) out
            x = node("Unsqueeze", [x, constant(f"n{n}_l{layer}_axis", np.array([1], np.int64))]) if layer == 0 else x
            lstm = [w[f"lstm.{kind}_l{layer}"][onnx_gates] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            x = node("LSTM", [x, constant(f"n{n}_W{layer}", lstm[0][None]), constant(f"n{n}_R{layer}", lstm[1][None]),
                              constant(f"n{n}_B{layer}", np.concatenate(lstm[2:])[None])], hidden_size=HIDDEN)
            x = node("Squeeze", [x, constant(f"n{n}_dir{layer}", np.array([1], np.int64))])
        x = node("Squeeze", [x, constant(f"n{n}_batch", np.array([1], np.int64))])
        x = node("Gemm", [x, constant(f"n{n}_l_w", w["linear.weight"]), constant(f"n{n}_l_b", w["linear.bias"])],
                 transB=1)
        outputs.append(node("Softmax", [x], axis=-1))
    mean = helper.make_node("Mean", outputs, ["mean"])
    first_two = helper.make_node("Slice", ["mean", constant("from", np.array([0], np.int64)),
                                           constant("to", np.array([2], np.int64)),
                                           constant("along", np.array([1], np.int64))], ["activations"])
    graph = helper.make_graph(
        [*nodes, mean, first_two], "beatnet",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["frames", NUM_FEATURES])],
        [helper.make_tensor_value_info("activations", TensorProto.FLOAT, ["frames", 2])], initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """A torch state dict saved by torch.save (a zip holding data.pkl and one file per storage) as float32 NumPy
    arrays, without torch: the pickle is read with only the three names such a file uses (an ordered dict, float
    storages and the tensor rebuilder), so it runs nothing else, as torch.load(weights_only=True) would."""
    import pickle
    import zipfile

    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/", 1)[0]

        def tensor(storage, offset, size, stride, *_):
            return np.lib.stride_tricks.as_strided(storage[offset:], size, [4 * s for s in stride]).copy()

        class StateDict(dict):  # torch sets a _metadata attribute on its OrderedDict
            pass

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                allowed = {("collections", "OrderedDict"): StateDict, ("torch._utils", "_rebuild_tensor_v2"): tensor,
                           ("torch", "FloatStorage"): np.float32}
                if (module, name) not in allowed:
                    raise pickle.UnpicklingError(f"{path.name}: {module}.{name} is not part of a state dict")
                return allowed[module, name]

            def persistent_load(self, pid):
                _, _, key, _, count = pid  # ('storage', its type, its file, its device, its length)
                return np.frombuffer(archive.read(f"{root}/data/{key}"), dtype="<f4", count=count)

        with archive.open(f"{root}/data.pkl") as pickled:
            return dict(Unpickler(pickled).load())
