"""``sedweak cluster``: k by silhouette, cluster numbering, representatives, the report, bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sedweak.cli import main
from sedweak.collections.cluster import ClusterSettings, choose_k, cluster_members, cluster_vectors
from sedweak.embeddings.extract import Embeddings, write_embeddings
from sedweak.errors import DataError

RATE = 16000


def three_blobs(sizes=(6, 5, 4), dim: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, true blob of each) for blobs of ``sizes`` points, centres 10 apart, spread 0.2."""
    rng = np.random.default_rng(seed)
    centres = 10.0 * np.eye(dim)[:3]
    truth = np.repeat(np.arange(3), sizes)
    return centres[truth] + 0.2 * rng.standard_normal((len(truth), dim)), truth


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_silhouette_picks_three_on_three_blobs_numbered_by_size(method):
    x, truth = three_blobs()
    k, scores = choose_k(x, ClusterSettings(method))
    assert k == 3 and sorted(scores) == list(range(2, 15)) and max(scores.values()) == scores[3]
    clustering = cluster_vectors(x, ClusterSettings(method))
    assert clustering.clusters == 3
    assert clustering.assignments.tolist() == truth.tolist()   # cluster 0 is the biggest blob (6), then 5, then 4


def test_representatives_are_closest_to_the_centroid_by_hand():
    """1-D points 0, 1, 2 | 10, 11, 13 with k = 2: centroids 1 and 34/3; distances
    1, 0, 1 | 4/3, 1/3, 5/3 -- ties broken by file name."""
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [13.0]])
    files = ["c.wav", "b.wav", "a.wav", "d.wav", "e.wav", "f.wav"]
    clustering = cluster_vectors(x, ClusterSettings(clusters=2, representatives_per_cluster=2))
    clusters = cluster_members(clustering, files)
    assert [c["representatives"] for c in clusters] == [["b.wav", "a.wav"], ["e.wav", "d.wav"]]
    assert [m["distance"] for m in clusters[1]["members"]] == [round(1 / 3, 6), round(4 / 3, 6), round(5 / 3, 6)]
    assert [m["file"] for m in clusters[0]["members"]] == ["b.wav", "a.wav", "c.wav"]


def test_impossible_ks_are_named():
    x, _ = three_blobs()
    with pytest.raises(DataError, match="-k 16 is more clusters than the 15 files"):
        cluster_vectors(x, ClusterSettings(clusters=16))
    with pytest.raises(DataError, match="choosing k needs at least 3 files, got 2"):
        cluster_vectors(x[:2], ClusterSettings())
    one = cluster_vectors(x, ClusterSettings(clusters=1))
    assert one.assignments.tolist() == [0] * 15 and one.silhouettes == {1: None}


def test_cli_on_an_embeddings_file_writes_the_report(tmp_path):
    x, truth = three_blobs()
    keys = [f"blob{t}_{i:02d}.wav" for i, t in enumerate(truth)]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    write_embeddings(tmp_path / "emb.h5", Embeddings(unit.astype(np.float32), tuple(keys), np.zeros(15), np.ones(15)))
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["cluster", str(tmp_path / "emb.h5"), "--out", str(out), "--representatives", "2"])
    assert result.exit_code == 0, result.output
    assert "15 files in 3 clusters (sizes 6, 5, 4)" in result.output
    record = json.loads((out / "clusters.json").read_text())
    assert record["clusters_found"] == 3 and [c["size"] for c in record["clusters"]] == [6, 5, 4]
    assert all(len(c["representatives"]) == 2 for c in record["clusters"])
    assert {f.split("_")[0] for f in record["clusters"][2]["representatives"]} == {"blob2"}
    rows = list(csv.DictReader((out / "clusters.csv").open()))
    assert len(rows) == 15 and {(r["file"].split("_")[0], r["cluster"]) for r in rows} == \
        {("blob0", "0"), ("blob1", "1"), ("blob2", "2")}
    assert (out / "map.png").read_bytes()[:4] == b"\x89PNG" and "## Cluster 2 (4 files)" in (out / "clusters.md").read_text()
    fixed = CliRunner().invoke(main, ["cluster", str(tmp_path / "emb.h5"), "--out", str(out), "-k", "2",
                                      "--method", "agglomerative"])
    assert fixed.exit_code == 0 and "in 2 clusters" in fixed.output
    assert json.loads((out / "clusters.json").read_text())["settings"]["method"] == "agglomerative"


def write_tones(folder, pitches_hz, per_pitch: int = 3):
    folder.mkdir(parents=True, exist_ok=True)
    for hz in pitches_hz:
        for i in range(per_pitch):
            t = np.arange(int(RATE * (0.5 + 0.1 * i))) / RATE
            sf.write(folder / f"tone{int(hz)}_{i}.wav", ((0.1 + 0.05 * i) * np.sin(2 * np.pi * hz * t)).astype(np.float32),
                     RATE)
    return folder


def test_cli_mfcc_groups_tones_by_pitch_and_skips_a_broken_file(tmp_path):
    folder = write_tones(tmp_path / "lib", (300.0, 1000.0, 3000.0))
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00not audio")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["cluster", str(folder), "--model", "mfcc", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "9 files in 3 clusters (sizes 3, 3, 3), 1 skipped" in result.output and "broken.wav" in result.output
    record = json.loads((out / "clusters.json").read_text())
    groups = [{m["file"].split("_")[0] for m in c["members"]} for c in record["clusters"]]
    assert sorted(map(sorted, groups)) == [["tone1000"], ["tone300"], ["tone3000"]]
    assert record["skipped"][0]["path"].endswith("broken.wav")


def test_bad_inputs_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    out = str(tmp_path / "report")
    empty = CliRunner().invoke(main, ["cluster", str(tmp_path / "empty"), "--model", "mfcc", "--out", out])
    assert empty.exit_code == 1 and "no audio files in" in empty.output
    no_model = CliRunner().invoke(main, ["cluster", str(tmp_path / "empty"), "--out", out])
    assert no_model.exit_code == 2 and "give audio with --model" in no_model.output
    bad_k = CliRunner().invoke(main, ["cluster", str(tmp_path / "empty"), "--model", "mfcc", "-k", "two", "--out", out])
    assert bad_k.exit_code == 2 and "expected 'auto' or a whole number" in bad_k.output
    (tmp_path / "broken.wav").write_bytes(b"junk")
    unreadable = CliRunner().invoke(main, ["cluster", str(tmp_path / "broken.wav"), "--model", "mfcc", "--out", out])
    assert unreadable.exit_code == 1 and "no file could be read" in unreadable.output
    not_h5 = tmp_path / "fake.h5"
    not_h5.write_text("text")
    fake = CliRunner().invoke(main, ["cluster", str(not_h5), "--out", out])
    assert fake.exit_code == 1 and "fake.h5: not a readable HDF5 file" in fake.output
