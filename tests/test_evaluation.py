"""Evaluation: golden values from sed_eval's own tests, hand-computed examples, error messages."""

import math
from pathlib import Path

import numpy as np
import pytest

from sedweak.config import EvalConfig
from sedweak.evaluation import (
    METRIC_KEYS,
    average_precision,
    evaluate_detection,
    markdown_table,
    per_class_markdown,
    score_events,
    score_tsv,
    tagging_scores,
)
from sedweak.labels import Event, LabelError, read_strong_tsv

SED_EVAL_DATA = Path(__file__).parent / "data" / "sed_eval"


def load_sed_eval_txt(path: Path, filename: str = "") -> dict[str, list[Event]]:
    """sed_eval test lists -> {file: [Event]}. Rows: [file [scene]] onset offset label, tab-separated."""
    out: dict[str, list[Event]] = {}
    for line in path.read_text().splitlines():
        cells = line.split("\t")
        if len(cells) == 3:
            cells = [filename] + cells
        elif len(cells) == 5:
            cells = [cells[0]] + cells[2:]  # drop scene_label
        name, onset, offset, label = cells
        out.setdefault(name, []).append(Event(name, float(onset), float(offset), label))
    return out


def test_importing_evaluation_loads_no_tensorflow_or_keras(modules_loaded_by):
    """Neither importing sedweak.evaluation nor scoring with it loads TensorFlow or Keras
    (modules only accumulate, so the check after scoring covers the import)."""
    code = ("import sedweak.evaluation as ev\nfrom sedweak.labels import Event\n"
            "ref = {'a': [Event('a', 0.0, 1.0, 'dog')]}\nev.score_events(ref, ref, ['dog'])")
    assert modules_loaded_by(code, {"tensorflow", "keras"}) == []


# ----------------------------------------------------------------------------- sed_eval goldens


@pytest.fixture(scope="module")
def street_fold1():
    reference = load_sed_eval_txt(SED_EVAL_DATA / "street_fold1_reference.txt")
    estimated = load_sed_eval_txt(SED_EVAL_DATA / "street_fold1_detected.txt")
    classes = sorted({e.label for events in reference.values() for e in events})
    return reference, estimated, classes


def test_street_fold1_segment_based_matches_sed_eval_tests(street_fold1):
    reference, estimated, classes = street_fold1
    assert len(reference) == 6 and sum(map(len, reference.values())) == 142
    result = evaluate_detection(reference, estimated, classes, EvalConfig(segment_seconds=1.0))
    # values pinned by sed_eval's tests/test_sound_event.py::test_dcase_style
    assert result["segment"]["error_rate"] == pytest.approx(1.0616698292220115, abs=1e-8)
    assert result["segment"]["accuracy"] == pytest.approx(0.84244791666, abs=1e-8)


def test_street_fold1_event_based_equals_sed_eval_on_its_own_loader(street_fold1):
    """The Event -> dict conversion loses nothing: same numbers as sed_eval fed by dcase_util."""
    import sed_eval

    reference, estimated, classes = street_fold1
    config = EvalConfig()
    ours = evaluate_detection(reference, estimated, classes, config)["event"]
    ref_list = sed_eval.io.load_event_list(str(SED_EVAL_DATA / "street_fold1_reference.txt"))
    est_list = sed_eval.io.load_event_list(str(SED_EVAL_DATA / "street_fold1_detected.txt"))
    metrics = sed_eval.sound_event.EventBasedMetrics(event_label_list=classes, t_collar=0.2,
                                                     percentage_of_length=0.2)
    for name in ref_list.unique_files:
        metrics.evaluate(ref_list.filter(filename=name), est_list.filter(filename=name))
    theirs = metrics.results()["overall"]
    assert ours["f1"] == pytest.approx(theirs["f_measure"]["f_measure"], abs=1e-12)
    assert ours["error_rate"] == pytest.approx(theirs["error_rate"]["error_rate"], abs=1e-12)
    assert ours["n_ref"] == 142 and ours["n_sys"] == 218


BINARY_CONFIG = EvalConfig(segment_seconds=1.0, t_collar_seconds=0.2, percentage_of_length=0.5)


def _binary_pairs():
    """binary1 / binary1_detected: sed_eval's files. binary2 / binary2_detected could not be
    retrieved: a stand-in pair stored as DESED TSVs, read with sedweak's reader (see
    tests/data/sed_eval/README.md)."""
    reference = load_sed_eval_txt(SED_EVAL_DATA / "binary1.txt", "binary1")
    estimated = load_sed_eval_txt(SED_EVAL_DATA / "binary1_detected.txt", "binary1")
    reference.update(read_strong_tsv(SED_EVAL_DATA / "binary2_standin.tsv", ["event1"]))
    estimated.update(read_strong_tsv(SED_EVAL_DATA / "binary2_standin_detected.tsv", ["event1"]))
    return reference, estimated


def test_binary2_standin_tsvs_read_as_a_clip_without_events_and_one_detection():
    """The reference row with only a file name is a listed clip with no event (so its
    detections are scored as insertions); the estimate is one 1.0-2.5 s event."""
    reference, estimated = _binary_pairs()
    assert reference == {"binary1": [Event("binary1", 1.2, 2.3, "event1")], "binary2": []}
    assert estimated == {"binary1": [Event("binary1", 1.3, 2.2, "event1")],
                         "binary2": [Event("binary2", 1.0, 2.5, "event1")]}


def test_binary_pairs_match_sed_eval_test_binary():
    reference, estimated = _binary_pairs()
    # sed_eval's test_binary: SegmentBasedMetrics(time_resolution=1.0) and
    # EventBasedMetrics(t_collar=0.20), i.e. onset + offset with percentage_of_length 0.5
    result = evaluate_detection(reference, estimated, ["event1"], BINARY_CONFIG)
    assert result["segment"]["accuracy"] == pytest.approx(0.666666666, abs=1e-8)
    assert result["segment"]["error_rate"] == 1.0
    assert result["segment"]["f1"] == pytest.approx(0.66666666, abs=1e-8)
    assert result["event"]["error_rate"] == pytest.approx(0.9999999999999999, abs=1e-12)
    assert result["event"]["f1"] == pytest.approx(2 / 3, abs=1e-12)
    assert result["event"]["per_class"]["event1"]["f1"] == pytest.approx(2 / 3, abs=1e-12)


def test_binary_pairs_equal_sed_eval_run_directly():
    """sed_eval's metric classes, run here without sedweak's adapter, on the same pairs in the
    same file order (binary1 through sed_eval's own loader, the stand-in as plain event lists:
    an empty reference and one detection) with the settings ``evaluate_detection`` passes for
    ``BINARY_CONFIG``. Every overall and per-class number sedweak reports equals sed_eval's
    exactly (no NaN / Nref = 0 rule applies: Nref > 0 overall and for event1)."""
    import sed_eval

    reference, estimated = _binary_pairs()
    ours = evaluate_detection(reference, estimated, ["event1"], BINARY_CONFIG)
    segment = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=["event1"], time_resolution=1.0)
    event = sed_eval.sound_event.EventBasedMetrics(event_label_list=["event1"], t_collar=0.2,
                                                   percentage_of_length=0.5, evaluate_onset=True,
                                                   evaluate_offset=True)
    pairs = [(sed_eval.io.load_event_list(str(SED_EVAL_DATA / "binary1.txt")),
              sed_eval.io.load_event_list(str(SED_EVAL_DATA / "binary1_detected.txt"))),
             ([], [{"event_label": "event1", "onset": 1.0, "offset": 2.5}])]
    for ref, est in pairs:
        segment.evaluate(reference_event_list=ref, estimated_event_list=est)
        event.evaluate(reference_event_list=ref, estimated_event_list=est)
    for level, metrics in (("segment", segment), ("event", event)):
        overall = metrics.results_overall_metrics()
        theirs = {**overall["error_rate"], "f1": overall["f_measure"]["f_measure"],
                  "precision": overall["f_measure"]["precision"], "recall": overall["f_measure"]["recall"],
                  "n_ref": metrics.overall["Nref"], "n_sys": metrics.overall["Nsys"]}
        if level == "segment":
            theirs["accuracy"] = overall["accuracy"]["accuracy"]
        assert {key: ours[level][key] for key in theirs} == theirs, level
        cw = metrics.results_class_wise_metrics()["event1"]
        assert ours[level]["per_class"]["event1"] == {
            "f1": cw["f_measure"]["f_measure"], "precision": cw["f_measure"]["precision"],
            "recall": cw["f_measure"]["recall"], "error_rate": cw["error_rate"]["error_rate"],
            "n_ref": cw["count"]["Nref"], "n_sys": cw["count"]["Nsys"]}, level
    # what the stand-in was chosen for: sed_eval's pinned test_binary numbers (README)
    assert segment.overall["Nref"] == 2 and segment.overall["Nsys"] == 4  # 1 s segments 1, 2 of each clip
    assert segment.results_overall_metrics()["accuracy"]["sensitivity"] == 1.0
    assert segment.results_overall_metrics()["accuracy"]["specificity"] == 0.5


# ----------------------------------------------------------------------------- NaN and edge rules


def test_class_without_detections_has_f1_zero_not_nan():
    import sed_eval

    reference = {"a": [Event("a", 0.0, 1.0, "dog"), Event("a", 2.0, 3.0, "cat")]}
    estimated = {"a": [Event("a", 0.0, 1.0, "dog")]}
    result = evaluate_detection(reference, estimated, ["cat", "dog", "bird"])
    for level in ("segment", "event"):
        cat, dog, bird = (result[level]["per_class"][c] for c in ("cat", "dog", "bird"))
        assert (cat["f1"], cat["precision"], cat["recall"]) == (0.0, 0.0, 0.0)
        assert cat["error_rate"] == pytest.approx(1.0)  # sed_eval: 1 / (1 + 2.2e-16)
        assert dog["f1"] == 1.0 and dog["error_rate"] == 0.0
        assert (bird["f1"], bird["error_rate"]) == (0.0, 0.0)  # no reference, no output
        assert result[level]["f1_macro"] == pytest.approx(1 / 3)
    # what sed_eval itself says for "cat": NaN (precision 0/0), hence the rule
    raw = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=["cat", "dog"], time_resolution=1.0)
    raw.evaluate([{"filename": "a", "event_label": "cat", "onset": 2.0, "offset": 3.0}], [])
    assert math.isnan(raw.results_class_wise_metrics()["cat"]["f_measure"]["f_measure"])


def test_insertions_on_a_class_without_reference_give_infinite_error_rate():
    reference = {"a": [Event("a", 0.0, 1.0, "dog")]}
    estimated = {"a": [Event("a", 0.0, 1.0, "dog"), Event("a", 2.0, 3.0, "cat")]}
    result = evaluate_detection(reference, estimated, ["cat", "dog"])
    assert math.isinf(result["segment"]["per_class"]["cat"]["error_rate"])
    assert math.isinf(result["event"]["per_class"]["cat"]["error_rate"])
    assert result["segment"]["error_rate"] == pytest.approx(1.0)  # 1 insertion / 1 reference segment


def test_reference_file_missing_from_estimate_counts_as_misses():
    reference = {"a": [Event("a", 0.0, 2.0, "dog")], "b": [Event("b", 0.0, 1.0, "dog")]}
    estimated = {"a": [Event("a", 0.0, 2.0, "dog")]}
    result = evaluate_detection(reference, estimated, ["dog"])
    assert result["segment"]["recall"] == pytest.approx(2 / 3)
    assert result["segment"]["error_rate"] == pytest.approx(1 / 3)
    assert result["event"]["f1"] == pytest.approx(2 / 3)  # 1 hit of 2 references, 1 output


def test_estimated_file_not_in_reference_is_an_error():
    with pytest.raises(LabelError, match="ghost.wav"):
        evaluate_detection({"a": []}, {"ghost.wav": [Event("ghost.wav", 0, 1, "dog")]}, ["dog"])


def test_unknown_label_is_an_error():
    with pytest.raises(LabelError, match="'cow'"):
        evaluate_detection({"a": [Event("a", 0, 1, "cow")]}, {}, ["dog"])


# ----------------------------------------------------------------------------- tagging


def test_tagging_three_clip_golden_values():
    reference = {"c1": ["dog", "cat"], "c2": ["dog"], "c3": []}
    estimated = {"c1": ["dog"], "c2": ["dog", "bird"], "c3": ["cat"]}
    scores = tagging_scores(reference, estimated, ["dog", "cat", "bird"])
    # tp 2 (dog c1, c2), fp 2 (bird c2, cat c3), fn 1 (cat c1)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(4 / 7)
    assert scores["f1_macro"] == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3
    assert scores["per_class"]["dog"]["f1"] == 1.0
    assert scores["per_class"]["bird"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 1, "fn": 0}


def test_tagging_zero_division_gives_zero():
    scores = tagging_scores({"c1": []}, {"c1": []}, ["dog"])
    assert (scores["precision"], scores["recall"], scores["f1"], scores["f1_macro"]) == (0.0, 0.0, 0.0, 0.0)


def test_tagging_rejects_unknown_file_and_label():
    with pytest.raises(LabelError, match="c9"):
        tagging_scores({"c1": []}, {"c9": ["dog"]}, ["dog"])
    with pytest.raises(LabelError, match="'cow'"):
        tagging_scores({"c1": ["cow"]}, {}, ["dog"])


def test_average_precision_golden_and_skipped_classes():
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.2, 0.5], [0.8, 0.6, 0.5], [0.3, 0.1, 0.5], [0.1, 0.7, 0.5]])
    result = average_precision(targets, scores, ["a", "b", "c"])
    assert result["per_class"]["a"] == pytest.approx((1 / 1 + 2 / 3) / 2)  # hits at ranks 1 and 3
    assert result["per_class"]["b"] == pytest.approx(1 / 2)  # hit at rank 2
    assert result["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert result["skipped_classes"] == ["c"]
    with pytest.raises(ValueError, match="no class has a positive"):
        average_precision(np.zeros((2, 1)), np.zeros((2, 1)), ["a"])


# ----------------------------------------------------------------------------- report / TSV


REF_TSV = (
    "filename\tonset\toffset\tevent_label\n"
    "a.wav\t0.0\t2.0\tdog\n"
    "a.wav\t3.0\t4.0\tcat\n"
    "b.wav\t\t\t\n"
)
EST_TSV = "filename\tonset\toffset\tevent_label\na.wav\t0.05\t2.1\tdog\nb.wav\t1.0\t1.5\tdog\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_score_tsv_hand_computed(tmp_path):
    metrics = score_tsv(_write(tmp_path, "ref.tsv", REF_TSV), _write(tmp_path, "est.tsv", EST_TSV))
    assert set(metrics) == set(METRIC_KEYS) | {"per_class"}
    expected = {
        # clips: a {cat, dog} -> {dog}; b {} -> {dog}: tp 1, fp 1, fn 1
        "tagging.precision": 0.5, "tagging.recall": 0.5, "tagging.f1": 0.5, "tagging.f1_macro": 1 / 3,
        # 1 s segments: a: dog 0,1 hit, dog 2 inserted, cat 3 deleted; b: dog 1 inserted
        # -> Nref 3, Nsys 4, TP 2, D 1, I 2
        "segment.error_rate": 1.0, "segment.f1": 4 / 7, "segment.f1_macro": 1 / 3,
        # events: dog on a matched (onset 0.05 s, offset 0.1 s off), cat missed, dog on b inserted
        "event.error_rate": 1.0, "event.f1": 0.5, "event.f1_macro": 1 / 3,
    }
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
        assert isinstance(metrics[key], float)
    assert metrics["per_class"]["dog"] == pytest.approx(
        {"tagging.f1": 2 / 3, "segment.f1": 2 / 3, "segment.error_rate": 1.0, "event.f1": 2 / 3,
         "event.error_rate": 1.0})
    assert metrics["per_class"]["cat"] == pytest.approx(
        {"tagging.f1": 0.0, "segment.f1": 0.0, "segment.error_rate": 1.0, "event.f1": 0.0,
         "event.error_rate": 1.0}, abs=1e-12)


def test_score_tsv_unknown_label_names_file_and_line(tmp_path):
    est = _write(tmp_path, "est.tsv", EST_TSV + "a.wav\t5.0\t6.0\tcow\n")
    with pytest.raises(LabelError, match=r"est\.tsv:4: unknown label 'cow'"):
        score_tsv(_write(tmp_path, "ref.tsv", REF_TSV), est)


def test_score_tsv_file_not_in_reference(tmp_path):
    est = _write(tmp_path, "est.tsv", EST_TSV + "c.wav\t0.0\t1.0\tdog\n")
    with pytest.raises(LabelError, match=r"est\.tsv.*'c\.wav'.*not in the reference"):
        score_tsv(_write(tmp_path, "ref.tsv", REF_TSV), est)


def test_score_tsv_malformed_row_names_file(tmp_path):
    est = _write(tmp_path, "est.tsv", EST_TSV + "a.wav\tabc\t1.0\tdog\n")
    with pytest.raises(LabelError, match=r"est\.tsv:4: onset/offset must be numbers"):
        score_tsv(_write(tmp_path, "ref.tsv", REF_TSV), est)


def test_score_tsv_explicit_classes_and_empty_reference(tmp_path):
    ref, est = _write(tmp_path, "ref.tsv", REF_TSV), _write(tmp_path, "est.tsv", EST_TSV)
    metrics = score_tsv(ref, est, classes=["cat", "dog", "bird"])
    assert set(metrics["per_class"]) == {"cat", "dog", "bird"}
    assert metrics["tagging.f1_macro"] == pytest.approx((0 + 2 / 3 + 0) / 3)
    empty = _write(tmp_path, "empty.tsv", "filename\tonset\toffset\tevent_label\nb.wav\t\t\t\n")
    with pytest.raises(LabelError, match="empty.tsv: no event"):
        score_tsv(empty, est)


def test_markdown_tables(tmp_path):
    metrics = score_tsv(_write(tmp_path, "ref.tsv", REF_TSV), _write(tmp_path, "est.tsv", EST_TSV))
    perfect = score_tsv(tmp_path / "ref.tsv", tmp_path / "ref.tsv")
    table = markdown_table({"baseline": metrics, "oracle": perfect}).splitlines()
    assert len(table) == 4 and table[0].startswith("| System | Tag P % |")
    assert table[2] == "| baseline | 50.0 | 50.0 | 50.0 | 33.3 | 1.00 | 57.1 | 33.3 | 1.00 | 50.0 | 33.3 |"
    assert table[3] == "| oracle | 100.0 | 100.0 | 100.0 | 100.0 | 0.00 | 100.0 | 100.0 | 0.00 | 100.0 | 100.0 |"
    rows = per_class_markdown(metrics).splitlines()
    assert rows[0] == "| Class | Tag F1 % | Seg F1 % | Seg ER | Event F1 % | Event ER |"
    assert "| dog | 66.7 | 66.7 | 1.00 | 66.7 | 1.00 |" in rows


def test_per_class_markdown_shows_infinite_error_rate():
    reference = {"a": [Event("a", 0.0, 1.0, "dog")]}
    estimated = {"a": [Event("a", 0.0, 1.0, "dog"), Event("a", 2.0, 3.0, "cat")]}
    text = per_class_markdown(score_events(reference, estimated, ["cat", "dog"]))
    assert "| cat | 0.0 | 0.0 | inf | 0.0 | inf |" in text


def test_score_clips_without_strong_labels_gives_tagging_and_nan_detection():
    from sedweak.evaluation import METRIC_KEYS, markdown_table, score_clips

    weak = {"a.wav": ["dog"], "b.wav": ["cat"], "c.wav": []}
    tags = {"a.wav": ["dog"], "b.wav": ["dog"], "c.wav": []}
    metrics = score_clips(weak, tags, {}, {}, ["cat", "dog"])
    assert set(metrics) == set(METRIC_KEYS) | {"per_class"}
    assert metrics["tagging.precision"] == pytest.approx(0.5) and metrics["tagging.recall"] == pytest.approx(0.5)
    assert math.isnan(metrics["segment.f1"]) and math.isnan(metrics["event.error_rate"])
    assert "| n/a |" in markdown_table({"m": metrics})


def test_score_clips_tags_every_clip_and_detects_on_strong_ones():
    from sedweak.evaluation import score_clips

    weak = {"a.wav": ["dog"], "w.wav": ["cat"]}
    strong = {"a.wav": [Event("a.wav", 1.0, 2.0, "dog")]}
    metrics = score_clips(weak, {"a.wav": ["dog"], "w.wav": ["cat"]}, strong, {"a.wav": [Event("a.wav", 1.0, 2.0, "dog")]},
                          ["cat", "dog"])
    assert metrics["tagging.f1"] == 1.0 and metrics["segment.f1"] == 1.0 and metrics["event.f1"] == 1.0
