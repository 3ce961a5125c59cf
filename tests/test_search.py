"""``sedweak index`` / ``sedweak search``: window times, incremental updates, resuming a killed
build, exact vs ANN backends, the CLI and bad input, on fabricated tones and noise."""

from __future__ import annotations

import json
import os
import shutil

import keras
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sedweak.cli import main
from sedweak.collections import index as index_module
from sedweak.collections.index import (
    IndexFileError,
    IndexModelError,
    load_index,
    read_manifest,
    update_index,
)
from sedweak.collections.search import (
    BACKENDS,
    AnnSettings,
    ExactSearch,
    FaissSearch,
    build_faiss,
    embed_query,
    make_backend,
    top_matches,
)
from sedweak.config import FeatureConfig, ModelConfig, PostprocessConfig
from sedweak.embeddings import extract
from sedweak.embeddings.extract import EmbeddingModelError
from sedweak.errors import DataError
from sedweak.models.crnn import build_crnn
from sedweak.models.saving import ModelInfo, save_model

RATE = 16000
INFO = ModelInfo(("a", "b"), FeatureConfig(), PostprocessConfig(), 4, 1.0)   # 1 s windows, default hop 0.5 s


def tone(seconds, hz):
    t = np.arange(int(round(seconds * RATE))) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(seconds, seed=0):
    return (0.2 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def tiny_crnn(seed):
    keras.utils.set_random_seed(seed)
    config = ModelConfig(conv_filters=(4, 4), conv_pool_freq=(4, 4), conv_pool_time=(2, 2), rnn_units=(4,),
                         embedding_dim=8)
    return build_crnn(config, 2, 64, INFO.clip_frames)


def spectral_model(seed):
    """Frame spectra normalised over mels (silence-floor padding -> zeros), projected to 8
    dimensions, averaged over time, unit length: a window's vector is its spectral shape, so
    equal sounds give cosine 1 and a tone is far from another tone (a random CRNN is too
    sensitive to a window's last frames for window-time assertions)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((INFO.clip_frames, 64))
    frames = keras.layers.Dense(8, use_bias=False)(keras.layers.LayerNormalization(center=False, scale=False)(inputs))
    vector = keras.layers.UnitNormalization()(keras.layers.GlobalAveragePooling1D()(frames))
    return keras.Model(inputs, {"embedding": vector})


@pytest.fixture(scope="module")
def spectral(tmp_path_factory):
    model = spectral_model(0)
    return model, save_model(model, tmp_path_factory.mktemp("model") / "spectral.keras", INFO)


@pytest.fixture(scope="module")
def crnn(tmp_path_factory):
    model = tiny_crnn(0)
    return model, save_model(model, tmp_path_factory.mktemp("model") / "crnn.keras", INFO)


@pytest.fixture
def folder(tmp_path):
    """long.wav: 2 s at 440 Hz then 2 s at 3 kHz; noise.wav: 1 s; short.wav: 0.5 s at 1 kHz."""
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    sf.write(audio / "long.wav", np.concatenate([tone(2, 440), tone(2, 3000)]), RATE)
    sf.write(audio / "noise.wav", noise(1.0), RATE)
    sf.write(audio / "sub" / "short.wav", tone(0.5, 1000), RATE)
    return audio


def build(folder, out, fixture, **kwargs):
    model, path = fixture
    return update_index(folder, out, path, model=model, info=INFO, **kwargs)


def counting(monkeypatch, fail_after=None):
    """Record the keys embed_files is called on; raise after ``fail_after`` calls (a killed build)."""
    calls, real = [], extract.embed_files

    def embed(model, info, items, *args, **kwargs):
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt("killed")
        calls.extend(key for _, key in items)
        return real(model, info, items, *args, **kwargs)

    monkeypatch.setattr(extract, "embed_files", embed)
    return calls


def rows(data):
    """Index rows as a sorted list of (file, start, end, vector) for comparing two indexes."""
    return sorted((data.files[f], s, e, tuple(np.round(v, 5))) for f, s, e, v in
                  zip(data.file_ids, data.start_seconds, data.end_seconds, data.vectors))


def test_windows_times_and_a_query_equal_to_an_indexed_window_ranks_first(spectral, folder, tmp_path):
    report = build(folder, tmp_path / "idx", spectral)
    assert report.embedded == ("long.wav", "noise.wav", "sub/short.wav") and report.failed == ()
    data = load_index(tmp_path / "idx")
    assert data.manifest.hop_seconds == 0.5 and data.manifest.window_seconds == 1.0
    long = data.file_ids == data.files.index("long.wav")
    np.testing.assert_allclose(data.start_seconds[long], np.arange(0, 4, 0.5))
    np.testing.assert_allclose(data.end_seconds[long], [1, 1.5, 2, 2.5, 3, 3.5, 4, 4])
    short = data.file_ids == data.files.index("sub/short.wav")   # shorter than a window: one padded row
    assert short.sum() == 1 and data.end_seconds[short] == [0.5]
    np.testing.assert_allclose(np.linalg.norm(data.vectors, axis=1), 1, atol=1e-5)
    name, backend = make_backend(data, "auto")
    assert name == "exact"
    shutil.copy(folder / "sub" / "short.wav", tmp_path / "q.wav")
    best = top_matches(data, backend, embed_query(spectral[0], INFO, tmp_path / "q.wav", 0.5), 3)[0]
    assert (best.file, best.start_seconds, best.end_seconds) == ("sub/short.wav", 0.0, 0.5)
    assert best.score == pytest.approx(1.0, abs=1e-5)
    # each window of a 1 s query searches: both of noise.wav's windows come back at ~1
    shutil.copy(folder / "noise.wav", tmp_path / "n.wav")
    queries = embed_query(spectral[0], INFO, tmp_path / "n.wav", 0.5, "each")
    assert queries.shape == (2, 8)
    top = top_matches(data, backend, queries, 2)
    assert {(m.file, m.start_seconds) for m in top} == {("noise.wav", 0.0), ("noise.wav", 0.5)}
    assert min(m.score for m in top) == pytest.approx(1.0, abs=1e-5)


def test_a_long_file_matches_at_the_right_window_times(spectral, folder, tmp_path):
    build(folder, tmp_path / "idx", spectral)
    data = load_index(tmp_path / "idx")
    _, backend = make_backend(data, "exact")
    sf.write(tmp_path / "hi.wav", tone(1, 3000), RATE)
    top = top_matches(data, backend, embed_query(spectral[0], INFO, tmp_path / "hi.wav", 0.5, "each"), 4)
    assert {m.file for m in top} == {"long.wav"}
    assert sorted(m.start_seconds for m in top) == [2.0, 2.5, 3.0, 3.5]   # the 3 kHz half only
    sf.write(tmp_path / "lo.wav", tone(1, 440), RATE)
    top = top_matches(data, backend, embed_query(spectral[0], INFO, tmp_path / "lo.wav", 0.5, "each"), 3)
    assert sorted(m.start_seconds for m in top) == [0.0, 0.5, 1.0] and {m.file for m in top} == {"long.wav"}
    assert min(m.score for m in top) > 0.999
    per_file = top_matches(data, backend, embed_query(spectral[0], INFO, tmp_path / "lo.wav", 0.5), 3, per_file=True)
    assert sorted(m.file for m in per_file) == ["long.wav", "noise.wav", "sub/short.wav"]
    assert per_file[0].file == "long.wav" and per_file[0].start_seconds <= 1.0


def test_update_embeds_only_new_or_changed_files_and_drops_removed_ones(spectral, folder, tmp_path, monkeypatch):
    build(folder, tmp_path / "idx", spectral, files_per_shard=1)
    before = read_manifest(tmp_path / "idx")
    calls = counting(monkeypatch)
    sf.write(folder / "new.wav", noise(1.5, seed=1), RATE)
    (folder / "noise.wav").unlink()
    report = build(folder, tmp_path / "idx", spectral, files_per_shard=1)
    assert calls == ["new.wav"] and report.embedded == ("new.wav",)
    assert report.removed == ("noise.wav",) and report.unchanged == 2
    after = read_manifest(tmp_path / "idx")
    assert after.files["long.wav"] == before.files["long.wav"]          # same shard, same embedding time
    assert sorted(after.files) == ["long.wav", "new.wav", "sub/short.wav"]
    assert before.files["noise.wav"].shard not in {s.name for s in after.shards}   # its shard deleted
    assert not (tmp_path / "idx" / "shards" / before.files["noise.wav"].shard).exists()
    data = load_index(tmp_path / "idx")
    assert "noise.wav" not in data.files and (data.file_ids == data.files.index("new.wav")).sum() == 3
    # a changed modification time is a changed file
    stat = os.stat(folder / "long.wav")
    os.utime(folder / "long.wav", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    calls.clear()
    assert build(folder, tmp_path / "idx", spectral).embedded == ("long.wav",) and calls == ["long.wav"]
    assert rows(load_index(tmp_path / "idx")) == rows(data)   # same audio: same rows


def test_a_killed_build_resumes_to_the_same_index_as_a_clean_build(spectral, folder, tmp_path, monkeypatch):
    build(folder, tmp_path / "clean", spectral)
    calls = counting(monkeypatch, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        build(folder, tmp_path / "idx", spectral, files_per_shard=1)
    manifest = read_manifest(tmp_path / "idx")
    assert calls == ["long.wav", "noise.wav"] and len(manifest.shards) == 2
    assert not (tmp_path / "idx" / ".lock").exists()
    # a shard half written when the process died: never listed, so never read, and deleted
    (tmp_path / "idx" / "shards" / "shard-000002.npz").write_bytes(b"PK\x03\x04 half a zip")
    assert len(load_index(tmp_path / "idx")) == 10
    monkeypatch.undo()   # the process restarts
    calls = counting(monkeypatch)
    report = build(folder, tmp_path / "idx", spectral, files_per_shard=1)
    assert calls == ["sub/short.wav"] and report.unchanged == 2
    assert sorted(p.name for p in (tmp_path / "idx" / "shards").iterdir()) == [
        "shard-000000.npz", "shard-000001.npz", "shard-000002.npz"]
    assert rows(load_index(tmp_path / "idx")) == rows(load_index(tmp_path / "clean"))



def clustered(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    vectors = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_exact_search_is_blockwise_brute_force():
    vectors, queries = clustered(1000, 16), clustered(7, 16, seed=1)
    scores, found = ExactSearch(vectors, block_rows=64, query_block=3).search(queries, 5)
    brute = queries @ vectors.T
    np.testing.assert_array_equal(found, np.argsort(-brute, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :5], rtol=1e-5)
    assert ExactSearch(vectors[:3]).search(queries, 5)[1].shape == (7, 3)   # k > N: all N


@pytest.mark.parametrize("kind", ["faiss", "hnsw"])
def test_ann_backends_agree_with_exact_on_top1(kind):
    pytest.importorskip("faiss")
    vectors = clustered(4000, 16)
    targets = np.random.default_rng(1).choice(4000, 50, replace=False)
    queries = vectors[targets] + 0.02 * np.random.default_rng(2).standard_normal((50, 16)).astype(np.float32)
    exact = ExactSearch(vectors).search(queries, 10)
    settings = AnnSettings(ivf_lists=64, ivf_probes=4)   # 1/16 of the cells: an approximate search
    ann = FaissSearch(build_faiss(vectors, kind, settings)).search(queries, 10)
    assert ann[1].shape == (50, 10)
    np.testing.assert_array_equal(exact[1][:, 0], targets)   # near copies of indexed vectors
    np.testing.assert_array_equal(ann[1][:, 0], exact[1][:, 0])
    np.testing.assert_allclose(ann[0][:, 0], exact[0][:, 0], rtol=1e-4)


def test_ann_backend_on_an_index_is_cached_and_gives_exacts_top1(spectral, folder, tmp_path):
    pytest.importorskip("faiss")
    build(folder, tmp_path / "idx", spectral)
    data = load_index(tmp_path / "idx")
    query = embed_query(spectral[0], INFO, folder / "noise.wav", 0.5)
    _, exact = make_backend(data, "exact")
    _, hnsw = make_backend(data, "hnsw", index_dir=tmp_path / "idx")
    assert top_matches(data, hnsw, query, 1) == top_matches(data, exact, query, 1)
    cached = list((tmp_path / "idx" / "ann").glob("hnsw-*.faiss"))
    assert len(cached) == 1
    _, again = make_backend(data, "hnsw", index_dir=tmp_path / "idx")   # read back, not rebuilt
    assert again.index.ntotal == len(data) and list((tmp_path / "idx" / "ann").glob("hnsw-*.faiss")) == cached


def test_cli_index_then_search(crnn, folder, tmp_path):
    _, model_path = crnn
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00not audio")
    out = tmp_path / "idx"
    result = CliRunner().invoke(main, ["index", str(folder), "--model", str(model_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "skipped broken.wav" in result.output and "11 windows" in result.output
    assert "embedded 3 files" in result.output and "1 failed (retried on the next run)" in result.output
    again = CliRunner().invoke(main, ["index", str(folder), "--model", str(model_path), "--out", str(out), "--strict"])
    assert again.exit_code == 1 and "embedded 0 files, kept 3" in again.output and "--strict: 1 files" in again.output
    shutil.copy(folder / "sub" / "short.wav", tmp_path / "q.wav")
    result = CliRunner().invoke(main, ["search", str(tmp_path / "q.wav"), "--index", str(out), "-k", "2",
                                       "--per-file", "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["rank", "score", "start_s", "end_s", "file"]
    assert lines[1].split() == ["1", "1.000", "0.00", "0.50", "sub/short.wav"]
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["backend"] == "exact" and record["rows"] == 11 and len(record["matches"]) == 2
    assert record["matches"][0] == {"file": "sub/short.wav", "start_seconds": 0.0, "end_seconds": 0.5,
                                    "score": pytest.approx(1.0, abs=1e-5)}
    assert record["matches"][1]["file"] != "sub/short.wav"
    bad_k = CliRunner().invoke(main, ["search", str(tmp_path / "q.wav"), "--index", str(out), "-k", "0"])
    assert bad_k.exit_code == 2 and "-k" in bad_k.output
    assert list(BACKENDS) == ["auto", "exact", "faiss", "hnsw"]   # the CLI's --backend choices


def test_a_bad_file_is_listed_as_failed_and_retried_until_it_is_fixed(spectral, folder, tmp_path, monkeypatch):
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00not audio")
    report = build(folder, tmp_path / "idx", spectral)
    assert [key for key, _ in report.failed] == ["broken.wav"] and len(report.embedded) == 3
    assert "broken.wav" in read_manifest(tmp_path / "idx").failed
    calls = counting(monkeypatch)
    assert build(folder, tmp_path / "idx", spectral).failed[0][0] == "broken.wav" and calls == ["broken.wav"]
    sf.write(folder / "broken.wav", noise(1.0, seed=3), RATE)
    report = build(folder, tmp_path / "idx", spectral)
    assert report.embedded == ("broken.wav",) and report.failed == ()
    assert "broken.wav" in load_index(tmp_path / "idx").files


def test_bad_input_is_named(spectral, folder, tmp_path):
    model, model_path = spectral
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: no audio files"):
        build(empty, tmp_path / "e", spectral)
    result = CliRunner().invoke(main, ["index", str(empty), "--model", str(model_path), "--out", str(tmp_path / "e")])
    assert result.exit_code == 1 and "no audio files" in result.output
    inputs = keras.Input((100, 64))
    headless = keras.Model(inputs, {"weak": keras.layers.Dense(2, name="weak")(keras.layers.Flatten()(inputs))})
    headless_path = save_model(headless, tmp_path / "headless.keras", INFO)
    with pytest.raises(EmbeddingModelError, match="no 'embedding' output"):
        update_index(folder, tmp_path / "h", headless_path, model=headless, info=INFO)
    with pytest.raises(IndexFileError, match="nowhere: no such index folder"):
        load_index(tmp_path / "nowhere")
    build(folder, tmp_path / "idx", spectral)
    other = spectral_model(1)
    other_path = save_model(other, tmp_path / "other.keras", INFO)
    with pytest.raises(IndexModelError, match="differs in sha256.*another --out"):
        update_index(folder, tmp_path / "idx", other_path, model=other, info=INFO)
    with pytest.raises(IndexModelError, match="built with --hop 0.5, not 0.25"):
        build(folder, tmp_path / "idx", spectral, hop_seconds=0.25)
    shard = tmp_path / "idx" / "shards" / read_manifest(tmp_path / "idx").shards[0].name
    shard.write_bytes(b"garbage")
    with pytest.raises(IndexFileError, match=f"{shard.name}: unreadable index shard"):
        load_index(tmp_path / "idx")
    assert build(folder, tmp_path / "idx", spectral).embedded == ("long.wav", "noise.wav", "sub/short.wav")
    (tmp_path / "idx" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFileError, match="manifest.json: corrupt index manifest"):
        read_manifest(tmp_path / "idx")
    result = CliRunner().invoke(main, ["search", str(folder / "noise.wav"), "--index", str(tmp_path / "idx")])
    assert result.exit_code == 1 and "corrupt index manifest" in result.output
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(IndexFileError, match="stuff: not empty and not a sedweak index"):
        build(folder, tmp_path / "stuff", spectral)
    assert not (tmp_path / "e").exists()   # an empty folder creates no index
