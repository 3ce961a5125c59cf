"""The device runtime as a package (export/sedweak_runtime/) and its ``sedweak-detect`` CLI.

The CLI tests run ``sedweak_runtime.cli.main`` in-process on a tiny float32 export (random
weights: the events do not matter, the files and exit codes do).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import sedweak_runtime
from sedweak_runtime import cli

RATE = 16000
BLOCKED = ["tensorflow", "keras", "sedweak", "librosa", "scipy"]
PUBLIC = ["Detector", "StagedModel", "StreamingModel", "StreamingLogMel", "logmel", "mel_matrix", "median_filter",
          "odd_window_frames", "probabilities_to_events", "strong_tsv_text", "window_starts", "to_model",
          "from_model", "Event", "SIDECAR_FORMAT", "STAGED_FORMAT", "STRONG_HEADER", "main", "FileResult",
          "RunningMean", "l2_normalize", "EMBEDDING_SIDECAR_FORMAT", "SIDECAR_FORMATS", "has_detection"]


def _tiny_model_and_info():
    """A tiny random CRNN (as tests/test_streaming.py::_tiny) and its ModelInfo; sedweak imported here."""
    from sedweak.models.saving import ModelInfo
    from sedweak.config import FeatureConfig, PostprocessConfig
    from sedweak.models.crnn import build_crnn
    from sedweak.config import get_preset

    config = dataclasses.replace(get_preset("fast"), conv_filters=(4, 4, 4), rnn_units=(6,))
    return build_crnn(config, 3), ModelInfo(("a", "b", "c"), FeatureConfig(), PostprocessConfig(), 4, 2.0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{"float32": whole-clip .tflite, "streaming": streaming .tflite, "embedding": whole-clip
    --with-embedding .tflite} of one tiny model, and "keras": (model, info)."""
    from sedweak.export import export_streaming, export_tflite

    model, info = _tiny_model_and_info()
    root = tmp_path_factory.mktemp("runtime_models")
    return {"float32": export_tflite(model, info, root / "m.tflite", "float32"),
            "streaming": export_streaming(model, info, root / "s.tflite", chunk_frames=20),
            "embedding": export_tflite(model, info, root / "e.tflite", "float32", with_embedding=True),
            "keras": (model, info)}


@pytest.fixture
def model(exported):
    return str(exported["float32"])


def _wav(path, seconds: float = 0.6, rate: int = RATE, seed: int = 0, channels: int = 1, scale: float = 0.1):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (int(seconds * rate), channels) if channels > 1 else int(seconds * rate)
    sf.write(path, scale * np.random.default_rng(seed).standard_normal(shape).astype(np.float32), rate)
    return path


def _keys(tsv) -> set[str]:
    lines = tsv.read_text().splitlines()
    assert lines[0] == sedweak_runtime.STRONG_HEADER
    return {line.split("\t")[0] for line in lines[1:]}


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- the package


def test_public_names_are_exported():
    missing = [name for name in PUBLIC if not hasattr(sedweak_runtime, name)]
    assert not missing
    assert set(PUBLIC) <= set(sedweak_runtime.__all__) | {"main"}
    assert sedweak_runtime.main is cli.main
    assert sedweak_runtime.STAGED_FORMAT == "sedweak-staged-3"


def test_package_imports_nothing_of_tensorflow_keras_sedweak_librosa_scipy():
    code = (f"import sys; sys.modules.update(dict.fromkeys({BLOCKED!r})); "
            "import sedweak_runtime; sedweak_runtime.cli; sedweak_runtime.Detector; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r} and sys.modules[m] is not None))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_python_m_runs_a_folder_without_tensorflow(model, tmp_path):
    _wav(tmp_path / "audio" / "x.wav")
    out = tmp_path / "events.tsv"
    code = (f"import sys, runpy; sys.modules.update(dict.fromkeys({BLOCKED!r})); "
            f"sys.argv = ['sedweak-detect', {model!r}, {str(tmp_path / 'audio')!r}, '--out', {str(out)!r}]; "
            "runpy.run_module('sedweak_runtime', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    assert _keys(out) == {"x.wav"} and done.stdout.strip().endswith(f"in 1 files -> {out}")


# ----------------------------------------------------------------------------- StagedModel contract


def _staged_meta(fmt: str = sedweak_runtime.STAGED_FORMAT, bidirectional: bool = True) -> dict:
    f32 = {"dtype": "float32"}
    gru_in = {"x_forward": f32, "state_forward": f32, **({"x_backward": f32, "state_backward": f32}
                                                          if bidirectional else {})}
    gru_out = {"y_forward": f32, "state_forward": f32, **({"y_backward": f32, "state_backward": f32}
                                                           if bidirectional else {})}
    return {"input": {"name": "logmel"},
            "staged": {"format": fmt, "steps": 3,
                       "layers": [{"signature": "gru_0", "units": 2, "bidirectional": bidirectional}],
                       "tensors": {"conv": {"inputs": {"logmel": f32}, "outputs": {"features": f32}},
                                   "gru_0": {"inputs": gru_in, "outputs": gru_out},
                                   "head": {"inputs": {"x": f32}, "outputs": {"strong": f32, "weak": f32}}}}}


def _plain_runners(calls: list):
    """numpy runners: conv keeps 2 features; the 'GRU' is a running sum (state = last output); head = identity."""
    def conv(logmel):
        calls.append(("conv", logmel))
        return {"features": logmel[..., :2]}

    def gru_0(x_forward, state_forward, x_backward=None, state_backward=None):
        calls.append(("gru_0", x_forward))
        out = {}
        for name, x, state in (("forward", x_forward, state_forward), ("backward", x_backward, state_backward)):
            if x is not None:
                y = state[:, None, :] + np.cumsum(x, axis=1)
                out[f"y_{name}"], out[f"state_{name}"] = y, y[:, -1]
        return out

    def head(x):
        calls.append(("head", x))
        return {"strong": x, "weak": x.max(axis=1)}

    return {"conv": conv, "gru_0": gru_0, "head": head}


@pytest.mark.parametrize("bidirectional", [False, True])
def test_staged_model_runs_plain_callables(bidirectional):
    calls: list = []
    window = np.random.default_rng(0).normal(size=(1, 8, 5)).astype(np.float32)   # 8 frames: 3 chunks of 3
    out = sedweak_runtime.StagedModel(_plain_runners(calls), _staged_meta(bidirectional=bidirectional))(window)
    x = window[0, :, :2]
    expected = np.cumsum(x, axis=0)
    if bidirectional:
        expected = np.concatenate([expected, np.cumsum(x[::-1], axis=0)[::-1]], axis=-1)
    np.testing.assert_allclose(out["strong"][0], expected, rtol=1e-5, atol=1e-6)
    assert [name for name, _ in calls] == ["conv", "gru_0", "gru_0", "gru_0", "head"]
    assert all(isinstance(x, np.ndarray) and x.dtype == np.float32 for _, x in calls)


def test_staged_model_from_interpreter_and_layout_checks():
    class FakeInterpreter:
        def __init__(self):
            self.asked = []

        def get_signature_runner(self, name):
            self.asked.append(name)
            return _plain_runners([])[name]

    interpreter = FakeInterpreter()
    staged = sedweak_runtime.StagedModel.from_interpreter(interpreter, _staged_meta())
    assert sorted(interpreter.asked) == ["conv", "gru_0", "head"]
    assert staged(np.ones((1, 4, 3), np.float32))["strong"].shape == (1, 4, 4)
    with pytest.raises(ValueError, match="staged layout 'sedweak-staged-2'.*re-export"):
        sedweak_runtime.StagedModel.from_interpreter(FakeInterpreter(), _staged_meta("sedweak-staged-2"))
    runners = _plain_runners([])
    del runners["head"]
    with pytest.raises(ValueError, match="no runner for signature.*head"):
        sedweak_runtime.StagedModel(runners, _staged_meta())


# ----------------------------------------------------------------------------- reading audio


def test_read_audio_mono_and_refusals(tmp_path):
    read = sedweak_runtime.read_audio
    stereo = _wav(tmp_path / "st.wav", 0.1, channels=2)
    data, _ = sf.read(stereo, dtype="float32")
    np.testing.assert_allclose(read(stereo, RATE), data.mean(axis=1), atol=1e-7)
    sf.write(tmp_path / "nan.wav", np.full(800, np.nan, np.float32), RATE, subtype="FLOAT")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    full = _wav(tmp_path / "full.flac", 0.5).read_bytes()
    (tmp_path / "cut.flac").write_bytes(full[:len(full) // 2])
    for name, message in [("nan.wav", "NaN or infinite"), ("empty.wav", "empty audio"),
                          ("st.wav", "sample rate 16000 Hz, the model needs 8000 Hz"),
                          ("cut.flac", "unreadable|truncated")]:
        with pytest.raises(ValueError, match=rf"{name}: ({message})"):
            read(tmp_path / name, 8000 if name == "st.wav" else RATE)


def test_truncated_wav_is_refused_though_libsndfile_reads_it(tmp_path):
    full = _wav(tmp_path / "full.wav", 1.0).read_bytes()
    for size in (100, len(full) // 2):
        (tmp_path / "cut.wav").write_bytes(full[:size])
        with pytest.raises(ValueError, match=r"cut\.wav: truncated audio \(\d+ of the 16000 frames"):
            sedweak_runtime.read_audio(tmp_path / "cut.wav", RATE)
    assert len(sedweak_runtime.read_audio(tmp_path / "full.wav", RATE)) == RATE


# ----------------------------------------------------------------------------- sedweak-detect


def test_folder_inputs_are_keyed_by_their_relative_paths(model, tmp_path, capsys):
    _wav(tmp_path / "in" / "a" / "clip.wav", seed=1)
    _wav(tmp_path / "in" / "b" / "clip.wav", seed=2)
    _wav(tmp_path / "in" / "b" / "deep" / "LOUD.WAV", seed=3)
    (tmp_path / "in" / "notes.txt").write_text("not audio")
    single = _wav(tmp_path / "elsewhere" / "one.wav", seed=4)
    out = tmp_path / "events.tsv"
    code, stdout, err = _run(capsys, model, tmp_path / "in", single, "--out", out)
    assert code == 0, err
    assert _keys(out) == {"a/clip.wav", "b/clip.wav", "b/deep/LOUD.WAV", "one.wav"}
    assert stdout.strip().endswith(f"events in 4 files -> {out}") and "skipped" not in err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_bad_files_are_skipped_and_the_batch_goes_on(model, tmp_path, capsys):
    folder = tmp_path / "in"
    _wav(folder / "good1.wav", seed=1)
    _wav(folder / "good2.flac", seed=2)
    (folder / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    _wav(folder / "rate8k.wav", rate=8000)
    (folder / "truncated.wav").write_bytes(_wav(tmp_path / "full.wav", 1.0).read_bytes()[:100])
    out = tmp_path / "events.tsv"
    code, stdout, err = _run(capsys, model, folder, "--out", out)
    assert code == 0
    assert _keys(out) == {"good1.wav", "good2.flac"}
    assert f"skipped {folder / 'corrupt.wav'}: unreadable audio" in err
    assert f"skipped {folder / 'rate8k.wav'}: sample rate 8000 Hz, the model needs 16000 Hz" in err
    assert f"skipped {folder / 'truncated.wav'}: truncated audio" in err
    assert stdout.strip().endswith(f"in 2 files -> {out} (3 skipped)")


def test_all_files_bad_exits_1_without_writing(model, tmp_path, capsys):
    _wav(tmp_path / "rate8k.wav", rate=8000)
    out = tmp_path / "events.tsv"
    code, _, err = _run(capsys, model, tmp_path / "rate8k.wav", tmp_path / "missing.wav", "--out", out)
    assert code == 1 and not out.exists()
    assert f"skipped {tmp_path / 'missing.wav'}: no such file" in err and "no file could be processed" in err


def test_strict_exits_1_on_one_bad_file_but_writes_the_others(model, tmp_path, capsys):
    good = _wav(tmp_path / "good.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF nonsense")
    out = tmp_path / "events.tsv"
    code, stdout, err = _run(capsys, model, good, tmp_path / "bad.wav", "--out", out, "--strict")
    assert code == 1 and _keys(out) == {"good.wav"}
    assert f"skipped {tmp_path / 'bad.wav'}:" in err and "(1 skipped)" in stdout
    assert _run(capsys, model, good, "--out", out, "--strict")[0] == 0


def test_duplicate_keys_exit_2_naming_both(model, tmp_path, capsys):
    first, second = _wav(tmp_path / "x" / "clip.wav"), _wav(tmp_path / "y" / "clip.wav")
    out = tmp_path / "events.tsv"
    code, _, err = _run(capsys, model, first, second, "--out", out)
    assert code == 2 and not out.exists()
    assert str(first) in err and str(second) in err and err.startswith("error:")
    code, _, err = _run(capsys, model, tmp_path / "x", tmp_path / "y", "--out", out)   # both folders: clip.wav
    assert code == 2 and "'clip.wav'" in err


def test_interpreter_runtime_error_skips_the_file(model, tmp_path, capsys, monkeypatch):
    original = sedweak_runtime.Detector.window_outputs

    def failing(self, x):   # a silent file (-100 dB everywhere) makes the "interpreter" fail
        if np.all(x <= -99.0):
            raise RuntimeError("tflite/kernels/div.cc:123 something went wrong.\nNode number 7 (DIV) failed to invoke.")
        return original(self, x)

    monkeypatch.setattr(sedweak_runtime.Detector, "window_outputs", failing)
    _wav(tmp_path / "in" / "noise.wav")
    _wav(tmp_path / "in" / "silent.wav", scale=0.0)
    out = tmp_path / "events.tsv"
    code, _, err = _run(capsys, model, tmp_path / "in", "--out", out)
    assert code == 0 and _keys(out) == {"noise.wav"}
    assert (f"skipped {tmp_path / 'in' / 'silent.wav'}: RuntimeError: tflite/kernels/div.cc:123 something went "
            "wrong. Node number 7 (DIV) failed to invoke.") in err


def test_bad_model_or_sidecar_exits_2(model, tmp_path, capsys):
    clip = _wav(tmp_path / "a.wav")
    out = tmp_path / "events.tsv"
    code, _, err = _run(capsys, tmp_path / "nothing.tflite", clip, "--out", out)
    assert code == 2 and err.startswith("error:") and "sidecar" in err
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(open(model, "rb").read())
    broken.with_name("broken.tflite.json").write_text("{not json")
    code, _, err = _run(capsys, broken, clip, "--out", out)
    assert code == 2 and "not JSON" in err
    meta = json.loads(open(model + ".json").read())
    broken.with_name("broken.tflite.json").write_text(json.dumps({**meta, "format": "other"}))
    assert _run(capsys, broken, clip, "--out", out)[0] == 2
    assert not out.exists()


def test_stream_flag(exported, tmp_path, capsys):
    _wav(tmp_path / "in" / "long.wav", 2.7, seed=5)
    _wav(tmp_path / "in" / "short.wav", 0.3, seed=6)
    out = tmp_path / "events.tsv"
    code, _, err = _run(capsys, exported["float32"], tmp_path / "in", "--out", out, "--stream")
    assert code == 2 and "--streaming" in err and not out.exists()
    code, _, err = _run(capsys, exported["streaming"], tmp_path / "in", "--out", out, "--stream")
    assert code == 0, err
    assert _keys(out) == {"long.wav", "short.wav"}
    detector = sedweak_runtime.Detector(exported["streaming"])
    wave = detector.read_audio(tmp_path / "in" / "long.wav")
    pieces = np.concatenate(list(detector.stream(wave[i:i + 1600] for i in range(0, len(wave), 1600))))
    assert np.abs(pieces - detector.frame_probabilities(wave)).max() < 1e-5
    assert _run(capsys, exported["streaming"], tmp_path / "in", "--out", out)[0] == 0   # whole-file, as before


def test_progress_line_for_long_folders(model, tmp_path, capsys):
    for i in range(11):
        _wav(tmp_path / "in" / f"c{i:02d}.wav", 0.2, seed=i)
    out = tmp_path / "events.tsv"
    code, _, err = _run(capsys, model, tmp_path / "in", "--out", out)
    assert code == 0 and "\r[1/11] c00.wav" in err and "\r[11/11] c10.wav" in err and err.endswith("\n")
    code, _, err = _run(capsys, model, tmp_path / "in", "--out", out, "--quiet")
    assert code == 0 and err == ""


def test_window_outputs_give_every_output_with_its_batch_axis(exported):
    detector = sedweak_runtime.Detector(exported["float32"])
    window = np.full((detector.meta["clip_frames"], 64), -60.0, np.float32)
    out = detector.window_outputs(window)
    assert out["strong"].shape == (1, detector.meta["clip_frames"] // 4, 3) and out["weak"].shape == (1, 3)
    with pytest.raises(ValueError, match="streaming file has no windows"):
        sedweak_runtime.Detector(exported["streaming"]).window_outputs(window)


def test_native_log_lines_go_to_the_logger_not_the_terminal(capfd, caplog):
    """What C++ writes to fd 2 (XNNPACK's "INFO: Created ...", the quantizer's lines) is
    logged at INFO (shown by ``-v``) instead of reaching the terminal; replayed on a failure."""
    import logging
    import os

    from sedweak_runtime.interpreter import native_stderr_to_log

    with caplog.at_level(logging.INFO, logger="sedweak_runtime.interpreter"):
        with native_stderr_to_log():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert "XNNPACK" not in capfd.readouterr().err
    assert "XNNPACK delegate" in caplog.text
    with pytest.raises(ZeroDivisionError), native_stderr_to_log():
        os.write(2, b"kernel says why\n")
        1 / 0
    assert "kernel says why" in capfd.readouterr().err


def test_opening_an_interpreter_prints_nothing(model, capfd):
    from sedweak_runtime.interpreter import open_interpreter

    open_interpreter(model).get_signature_runner("serve")
    assert capfd.readouterr().err == ""


def test_detect_file_streams_from_disk_and_equals_the_whole_file(model, tmp_path, monkeypatch):
    """Blocks of 0.3 s through the window stitcher give the track of the whole waveform;
    peak traced memory for 4 minutes stays within 1.3x that of 1 minute."""
    import tracemalloc

    import sedweak_runtime.audio as audio_module

    detector = sedweak_runtime.Detector(model)
    path = _wav(tmp_path / "long.wav", seconds=7.3, seed=3)
    whole = detector.frame_probabilities(detector.read_audio(path))
    monkeypatch.setattr(audio_module, "BLOCK_SECONDS", 0.3)
    streamed = detector.stitched_probabilities(sedweak_runtime.read_blocks(path, RATE))
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
    monkeypatch.undo()
    peaks = []
    for minutes in (1, 4):
        long = _wav(tmp_path / f"{minutes}.wav", seconds=60.0 * minutes)
        tracemalloc.start()
        detector.detect_file(long)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0], peaks


# ----------------------------------------------------------------------------- clip embeddings


def test_embeddings_flag_writes_one_unit_vector_per_file(exported, tmp_path, capsys):
    """--embeddings OUT.npz: arrays 'embeddings' (N, E) float32 unit-norm and 'files' (N,)
    keyed as the TSV; each the mean of the file's window embeddings, re-normalised, as
    `sedweak embed` (Keras; measured 1e-7)."""
    from sedweak.embeddings.extract import embed_logmel, embedding_function
    from sedweak.features import logmel_file

    _wav(tmp_path / "in" / "a" / "long.wav", 5.3, seed=7)           # several windows
    _wav(tmp_path / "in" / "short.wav", 0.4, seed=8)
    (tmp_path / "in" / "bad.wav").write_bytes(b"RIFF nonsense")
    out, npz = tmp_path / "events.tsv", tmp_path / "emb.npz"
    code, stdout, err = _run(capsys, exported["embedding"], tmp_path / "in", "--out", out, "--embeddings", npz)
    assert code == 0, err
    assert f"2 clip embeddings of 64 -> {npz}" in stdout and "skipped" in err
    with np.load(npz) as saved:                                     # no pickle needed
        files, vectors = list(saved["files"]), saved["embeddings"]
    assert files == ["a/long.wav", "short.wav"] and _keys(out) <= set(files)
    assert vectors.shape == (2, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    model, info = exported["keras"]
    for key, vector in zip(files, vectors):
        keras_vector = embed_logmel(embedding_function(model), logmel_file(tmp_path / "in" / key, info.features), info)[0][0]
        assert np.abs(vector - keras_vector).max() < 1e-4
    result = sedweak_runtime.Detector(exported["embedding"]).analyse_file(tmp_path / "in" / "short.wav")
    np.testing.assert_allclose(result.embedding, vectors[1], atol=1e-7)
    assert result.probabilities.shape == (10, 3) and isinstance(result.events, list)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_embeddings_from_a_file_without_one_is_an_error_naming_it(exported, tmp_path, capsys):
    clip, out, npz = _wav(tmp_path / "a.wav"), tmp_path / "events.tsv", tmp_path / "emb.npz"
    code, _, err = _run(capsys, exported["float32"], clip, "--out", out, "--embeddings", npz)
    assert code == 2 and not out.exists() and not npz.exists()
    assert err.startswith(f"error: {exported['float32']}: --embeddings, but this model file has no clip embedding")
    assert "--with-embedding" in err
    code, _, err = _run(capsys, exported["embedding"], clip, "--out", out, "--embeddings", tmp_path / "emb.h5")
    assert code == 2 and "must end in .npz" in err
    detector = sedweak_runtime.Detector(exported["float32"])
    assert detector.embedding is None and detector.analyse_file(clip).embedding is None
    with pytest.raises(ValueError, match=r"m\.tflite: no clip embedding in this file"):
        detector.require_embedding()


def test_sidecar_formats_old_and_new(exported, tmp_path):
    """Format 1 (no embedding) still loads, an 'embedding' key in it is ignored; format 2
    must carry a known embedding section."""
    model = tmp_path / "x.tflite"
    model.write_bytes(exported["embedding"].read_bytes())
    new = json.loads(open(str(exported["embedding"]) + ".json").read())
    assert new["format"] == sedweak_runtime.EMBEDDING_SIDECAR_FORMAT == "sedweak-tflite-2"
    assert json.loads(open(str(exported["float32"]) + ".json").read())["format"] == "sedweak-tflite-1"
    model.with_name("x.tflite.json").write_text(json.dumps({**new, "format": "sedweak-tflite-1"}))
    assert "embedding" not in sedweak_runtime.read_sidecar(model)
    for broken, message in [({k: v for k, v in new.items() if k != "embedding"}, r"missing keys \['embedding'\]"),
                            ({**new, "embedding": {**new["embedding"], "finish": "median"}}, "need a finish of"),
                            ({**new, "embedding": {"finish": "final"}}, r"embedding\.output")]:
        model.with_name("x.tflite.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=message):
            sedweak_runtime.read_sidecar(model)


def test_running_mean_and_l2_normalize():
    mean = sedweak_runtime.RunningMean(3)
    with pytest.raises(ValueError, match="no frames yet"):
        mean.result()
    mean.add(np.array([[3.0, 0.0, 0.0]]))
    mean.add(np.zeros((0, 3)))
    mean.add(np.array([[0.0, 4.0, 0.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(mean.result(), [0.6, 0.8, 0.0], atol=1e-7)
    assert mean.count == 3
    np.testing.assert_array_equal(sedweak_runtime.l2_normalize(np.zeros(4)), np.zeros(4, np.float32))   # as Keras


# ----------------------------------------------------------------------------- embedding-only files


@pytest.fixture(scope="module")
def embedding_only(tmp_path_factory):
    """A whole-clip float32 file of a tiny patch CNN (one output, ``embedding``, E = 8)."""
    import keras

    from sedweak.config import FeatureConfig, PostprocessConfig
    from sedweak.embeddings.models import build_patch_embedding
    from sedweak.export import export_tflite
    from sedweak.models.saving import ModelInfo

    keras.utils.set_random_seed(1)
    model = build_patch_embedding(n_mels=64, embedding_dim=8, filters=(4, 4, 4, 4))
    info = ModelInfo(("a", "b"), FeatureConfig(), PostprocessConfig(), 1, 1.0)
    return export_tflite(model, info, tmp_path_factory.mktemp("embedding_only") / "e.tflite", "float32",
                         with_embedding=True)


def test_embedding_only_file_writes_embeddings_and_refuses_out(embedding_only, exported, tmp_path, capsys):
    """An embedding-only file: --embeddings alone (no TSV), --out refused (exit 2, nothing
    written), --embeddings required; a detection file still needs --out."""
    _wav(tmp_path / "in" / "long.wav", 2.3, seed=3)
    _wav(tmp_path / "in" / "short.wav", 0.3, seed=4)
    (tmp_path / "in" / "bad.wav").write_bytes(b"RIFF nonsense")
    out, npz = tmp_path / "events.tsv", tmp_path / "emb.npz"
    code, stdout, err = _run(capsys, embedding_only, tmp_path / "in", "--embeddings", npz)
    assert code == 0, err
    assert stdout.strip() == f"2 clip embeddings of 8 -> {npz} (1 skipped)" and "skipped" in err
    with np.load(npz) as saved:
        files, vectors = list(saved["files"]), saved["embeddings"]
    assert files == ["long.wav", "short.wav"] and vectors.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    result = sedweak_runtime.Detector(embedding_only).analyse_file(tmp_path / "in" / "long.wav")
    assert result.events == [] and result.probabilities is None
    np.testing.assert_array_equal(result.embedding, vectors[0])
    npz.unlink()
    code, _, err = _run(capsys, embedding_only, tmp_path / "in", "--out", out, "--embeddings", npz)
    assert code == 2 and not out.exists() and not npz.exists()
    assert err.startswith(f"error: {embedding_only}: --out, but this is an embedding-only model file")
    code, _, err = _run(capsys, embedding_only, tmp_path / "in")
    assert code == 2 and "pass --embeddings OUT.npz" in err
    code, _, err = _run(capsys, exported["float32"], tmp_path / "in")
    assert code == 2 and "--out EVENTS.tsv is required" in err


def test_sidecar_without_strong_needs_an_embedding(embedding_only, tmp_path):
    meta = json.loads(embedding_only.with_name("e.tflite.json").read_text())
    assert [o["name"] for o in meta["outputs"]] == ["embedding"]
    assert not sedweak_runtime.has_detection(sedweak_runtime.read_sidecar(embedding_only))
    model = tmp_path / "x.tflite"
    model.write_bytes(embedding_only.read_bytes())
    model.with_name("x.tflite.json").write_text(json.dumps({**meta, "format": "sedweak-tflite-1"}))
    with pytest.raises(ValueError, match="neither a 'strong' output nor a clip embedding"):
        sedweak_runtime.read_sidecar(model)
