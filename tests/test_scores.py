"""Threshold-free metrics (sedweak.evaluation.scores): hand-counted values, the score-file
format, and every bad input named."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sedweak.evaluation.scores import (
    ScoreFileError,
    merge_touching,
    psds_scores,
    read_durations_tsv,
    read_scores,
    score_frames,
    write_scores,
)
from sedweak.labels import Event, LabelError

CLASSES = ("dog", "siren")
FPS = 10.0  # 10 s clips of 100 frames


def _track(*spans: tuple[int, float, float, float]) -> np.ndarray:
    """(class index, onset s, offset s, score) spans on a zero background."""
    track = np.zeros((100, len(CLASSES)))
    for index, onset, offset, value in spans:
        track[int(onset * FPS):int(offset * FPS), index] = value
    return track


def _ref(name: str, *events: tuple[float, float, str]) -> list[Event]:
    return [Event(name, onset, offset, label) for onset, offset, label in events]


def test_a_perfect_detector_scores_one_everywhere():
    probs = {"a.wav": _track((0, 1, 3, 0.9), (1, 5, 8, 0.8)), "b.wav": _track((0, 2, 4, 0.7))}
    reference = {"a.wav": _ref("a.wav", (1, 3, "dog"), (5, 8, "siren")), "b.wav": _ref("b.wav", (2, 4, "dog"))}
    out = psds_scores(score_frames(probs, CLASSES, FPS), reference, CLASSES)
    assert out["psds1"] == pytest.approx(1.0) and out["psds2"] == pytest.approx(1.0)
    assert out["intersection.f1"] == pytest.approx(1.0)
    assert out["classes_without_reference"] == []


def test_intersection_f1_counts_by_hand():
    # dog: 2 reference events; the system finds the first (above 0.5) and fires on silence
    # once: TP 1, FP 1, FN 1 -> P = R = F1 = 0.5. siren: found exactly -> F1 1. Macro: 0.75.
    probs = {"a.wav": _track((0, 1, 3, 0.9), (0, 6, 7, 0.8), (0, 8, 9, 0.3), (1, 4, 5, 0.6))}
    reference = {"a.wav": _ref("a.wav", (1, 3, "dog"), (8, 9.5, "dog"), (4, 5, "siren"))}
    out = psds_scores(score_frames(probs, CLASSES, FPS), reference, CLASSES, thresholds={"dog": 0.5, "siren": 0.5})
    assert out["per_class"]["dog"]["intersection.f1"] == pytest.approx(0.5)
    assert out["per_class"]["siren"]["intersection.f1"] == pytest.approx(1.0)
    assert out["intersection.f1"] == pytest.approx(0.75)
    # Lowering dog's threshold to 0.2 detects [8, 9) s: 1 s of a 1.5 s event is 67 % < gtc 0.7
    # -> still missed for F1 at dtc = gtc = 0.7; PSDS1's ROC is the same way below 1.
    assert psds_scores(score_frames(probs, CLASSES, FPS), reference, CLASSES,
                       thresholds={"dog": 0.2, "siren": 0.5})["per_class"]["dog"]["intersection.f1"] == \
        pytest.approx(2 * (1 / 2) * (1 / 2) / (1 / 2 + 1 / 2))
    assert 0.0 < psds_scores(score_frames(probs, CLASSES, FPS), reference, CLASSES)["per_class"]["dog"]["psds1"] < 1.0


def test_silence_and_saturated_scores():
    reference = {"a.wav": _ref("a.wav", (1, 3, "dog"), (5, 8, "siren"))}
    silent = psds_scores(score_frames({"a.wav": np.zeros((100, 2))}, CLASSES, FPS), reference, CLASSES)
    assert silent["psds1"] == 0.0 and silent["intersection.f1"] == 0.0
    # Everything on everywhere: one detection per class covering the clip. Its overlap with
    # the reference is 2/10 and 3/10 of it: below dtc 0.7 (PSDS1: a false positive, 0), above
    # dtc 0.1 (PSDS2: found), so the two settings disagree as they are meant to.
    full = psds_scores(score_frames({"a.wav": np.ones((100, 2))}, CLASSES, FPS), reference, CLASSES)
    assert full["psds1"] == 0.0 and full["psds2"] > 0.0


def test_a_class_without_reference_is_left_out_and_named():
    probs = {"a.wav": _track((0, 1, 3, 0.9), (1, 5, 8, 0.8))}
    out = psds_scores(score_frames(probs, CLASSES, FPS), {"a.wav": _ref("a.wav", (1, 3, "dog"))}, CLASSES)
    assert out["classes_without_reference"] == ["siren"]
    assert out["psds1"] == pytest.approx(1.0)
    assert math.isnan(out["per_class"]["siren"]["psds1"])
    none = psds_scores(score_frames(probs, CLASSES, FPS), {"a.wav": []}, CLASSES)
    assert math.isnan(none["psds1"]) and none["classes_without_reference"] == list(CLASSES)


def test_touching_same_class_references_are_one_event():
    events = _ref("a.wav", (4.0, 5.9, "car"), (5.9, 7.8, "car"), (6.0, 7.0, "dog"), (9.0, 9.5, "car"))
    assert merge_touching(events) == [(4.0, 7.8, "car"), (6.0, 7.0, "dog"), (9.0, 9.5, "car")]
    probs = {"a.wav": _track((0, 4, 7.8, 0.9))}
    out = psds_scores(score_frames(probs, CLASSES, FPS), {"a.wav": _ref("a.wav", (4, 6, "dog"), (6, 7.8, "dog"))},
                      CLASSES)
    assert out["psds1"] == pytest.approx(1.0)


def test_scores_and_reference_must_name_the_same_files():
    scores = score_frames({"a.wav": np.zeros((100, 2))}, CLASSES, FPS)
    with pytest.raises(LabelError, match="no scores for 1 reference file"):
        psds_scores(scores, {"a.wav": [], "b.wav": []}, CLASSES)
    with pytest.raises(LabelError, match="not among the scored classes"):
        psds_scores(scores, {"a.wav": _ref("a.wav", (1, 2, "cat"))}, CLASSES)


def test_score_files_round_trip_flat_and_nested(tmp_path):
    probs = {"a.wav": _track((0, 1, 3, 0.9)), "sub/b.flac": _track((1, 2, 4, 0.25))}
    write_scores(tmp_path / "s", probs, CLASSES, FPS)
    assert (tmp_path / "s" / "a.tsv").is_file() and (tmp_path / "s" / "sub" / "b.tsv").is_file()
    header = (tmp_path / "s" / "a.tsv").read_text().splitlines()[:2]
    assert header == ["onset\toffset\tdog\tsiren", "0\t0.1\t0\t0"]   # sed_scores_eval's format
    scores, classes = read_scores(tmp_path / "s")
    assert classes == list(CLASSES) and set(scores) == {"a", "sub/b"}
    np.testing.assert_allclose(scores["sub/b"][["dog", "siren"]].to_numpy(), probs["sub/b.flac"], atol=1e-6)
    assert scores["a"]["offset"].iloc[-1] == pytest.approx(10.0)


@pytest.mark.parametrize("content, message", [
    (None, "no such score folder"),
    ("", "no .tsv score files"),
    ("time\tdog\n0\t1\n", "expected onset, offset"),
    ("onset\toffset\tdog\n0\t0.1\tnan\n", "NaN, infinite or non-numeric"),
    ("onset\toffset\tdog\n0\t0.1\tloud\n", "NaN, infinite or non-numeric"),
    ("onset\toffset\tdog\n0\t0.1\t0.5\n0.2\t0.3\t0.5\n", "contiguous"),
    ("onset\toffset\tdog\n", "no frames"),
])
def test_bad_score_folders_are_named(tmp_path, content, message):
    folder = tmp_path / "scores"
    if content is not None:
        folder.mkdir()
        if content:
            (folder / "x.tsv").write_text(content)
    with pytest.raises(ScoreFileError, match=message) as err:
        read_scores(folder)
    assert str(folder) in str(err.value)


def test_score_files_with_different_classes_are_refused(tmp_path):
    write_scores(tmp_path, {"a.wav": np.zeros((10, 2))}, CLASSES, FPS)
    write_scores(tmp_path, {"b.wav": np.zeros((10, 2))}, ("dog", "cat"), FPS)
    with pytest.raises(ScoreFileError, match="b.tsv: classes"):
        read_scores(tmp_path)


def test_durations_tsv(tmp_path):
    path = tmp_path / "durations.tsv"
    path.write_text("filename\tduration\na.wav\t10.0\nb.wav\t9.5\n")
    assert read_durations_tsv(path) == {"a.wav": 10.0, "b.wav": 9.5}
    path.write_text("filename\tduration\na.wav\t-1\n")
    with pytest.raises(LabelError, match="durations.tsv:2: duration must be > 0"):
        read_durations_tsv(path)
    path.write_text("file\tseconds\n")
    with pytest.raises(LabelError, match="durations.tsv:1: expected header"):
        read_durations_tsv(path)
