"""Labels: TSV round trips, malformed files, and hand-computed frame matrices.

Frame convention under test: at r frames/s, frame i covers [i / r, (i + 1) / r) s and is
active when an event overlaps it.
"""

from __future__ import annotations

import numpy as np
import pytest

from sedweak.labels import (
    Event,
    LabelError,
    events_to_frames,
    frames_to_events,
    frames_to_weak,
    read_strong_tsv,
    read_weak_tsv,
    resample_frames,
    weak_from_strong,
    weak_vector,
    write_strong_tsv,
    write_weak_tsv,
)

CLASSES = ("cat", "dog", "speech")
STRONG_HEADER = "filename\tonset\toffset\tevent_label\n"


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- TSV I/O


def test_strong_tsv_round_trip_keeps_events_and_empty_clip(tmp_path):
    events = {
        "a.wav": [Event("a.wav", 1.5, 2.25, "dog"), Event("a.wav", 0.0, 0.5, "cat")],
        "b.wav": [],
        "c.wav": [Event("c.wav", 3.125, 9.999, "speech")],
    }
    path = write_strong_tsv(tmp_path / "strong.tsv", events)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "filename\tonset\toffset\tevent_label"
    # The clip without events is a filename-only row, so it survives the round trip.
    assert "b.wav\t\t\t" in lines
    assert lines[1:3] == ["a.wav\t0.000\t0.500\tcat", "a.wav\t1.500\t2.250\tdog"]
    back = read_strong_tsv(path, classes=CLASSES)
    assert back == {
        "a.wav": [Event("a.wav", 0.0, 0.5, "cat"), Event("a.wav", 1.5, 2.25, "dog")],
        "b.wav": [],
        "c.wav": [Event("c.wav", 3.125, 9.999, "speech")],
    }
    assert not list(tmp_path.glob(".*"))  # atomic write leaves no temporary file


def test_strong_tsv_filename_only_row_without_tabs(tmp_path):
    path = _write(tmp_path / "s.tsv", STRONG_HEADER + "quiet.wav\n\nx.wav\t0.1\t0.2\tcat\n")
    assert read_strong_tsv(path) == {"quiet.wav": [], "x.wav": [Event("x.wav", 0.1, 0.2, "cat")]}


def test_weak_tsv_round_trip_with_empty_clip(tmp_path):
    labels = {"a.wav": ["speech", "dog", "dog"], "b.wav": [], "c.wav": ["cat"]}
    path = write_weak_tsv(tmp_path / "weak.tsv", labels)
    assert path.read_text(encoding="utf-8") == (
        "filename\tevent_labels\na.wav\tdog,speech\nb.wav\t\nc.wav\tcat\n")
    assert read_weak_tsv(path, classes=CLASSES) == {"a.wav": ["dog", "speech"], "b.wav": [], "c.wav": ["cat"]}


@pytest.mark.parametrize("row, fragment", [
    ("a.wav\tone\t2.0\tdog", "must be numbers"),
    ("a.wav\t3.0\t2.0\tdog", "onset <= offset"),
    ("a.wav\t-1.0\t2.0\tdog", "onset <= offset"),
    ("a.wav\tnan\t2.0\tdog", "onset <= offset"),
    ("a.wav\t1.0\t2.0\t", "empty event_label"),
    ("\t1.0\t2.0\tdog", "empty filename"),
])
def test_malformed_strong_rows_name_file_and_line(tmp_path, row, fragment):
    good = "ok.wav\t0.0\t1.0\tcat\n"
    path = _write(tmp_path / "bad_strong.tsv", STRONG_HEADER + good + good + row + "\n")
    with pytest.raises(LabelError) as info:
        read_strong_tsv(path)
    message = str(info.value)
    assert "bad_strong.tsv:4:" in message  # header is line 1, the bad row line 4
    assert fragment in message


def test_wrong_strong_header_is_line_1(tmp_path):
    path = _write(tmp_path / "hdr.tsv", "filename\tstart\tend\tlabel\na.wav\t0\t1\tcat\n")
    with pytest.raises(LabelError, match=r"hdr\.tsv:1: expected header"):
        read_strong_tsv(path)


def test_wrong_weak_header_is_line_1(tmp_path):
    # A strong file given where a weak one is expected.
    path = _write(tmp_path / "w.tsv", STRONG_HEADER + "a.wav\t0\t1\tcat\n")
    with pytest.raises(LabelError, match=r"w\.tsv:1: expected header"):
        read_weak_tsv(path)


def test_weak_row_with_too_many_columns(tmp_path):
    path = _write(tmp_path / "w.tsv", "filename\tevent_labels\na.wav\tcat\nb.wav\tdog\textra\n")
    with pytest.raises(LabelError, match=r"w\.tsv:3: expected 2 columns"):
        read_weak_tsv(path)


def test_unknown_label_with_classes_given(tmp_path):
    strong = _write(tmp_path / "s.tsv", STRONG_HEADER + "a.wav\t0\t1\tcat\na.wav\t1\t2\tbird\n")
    with pytest.raises(LabelError, match=r"s\.tsv:3: unknown label 'bird'"):
        read_strong_tsv(strong, classes=CLASSES)
    assert read_strong_tsv(strong)["a.wav"][1].label == "bird"  # no classes: any label is fine
    weak = _write(tmp_path / "w.tsv", "filename\tevent_labels\na.wav\tcat,bird\n")
    with pytest.raises(LabelError, match=r"w\.tsv:2: unknown label 'bird'"):
        read_weak_tsv(weak, classes=CLASSES)


def test_missing_and_empty_label_files(tmp_path):
    with pytest.raises(LabelError, match="not found"):
        read_strong_tsv(tmp_path / "nope.tsv")
    with pytest.raises(LabelError, match=r"empty\.tsv: empty file"):
        read_weak_tsv(_write(tmp_path / "empty.tsv", ""))


# ----------------------------------------------------------------------------- frames


def test_events_to_frames_golden_100_fps():
    events = [
        Event("a", 0.0, 0.03, "cat"),        # frames 0, 1, 2
        Event("a", 0.015, 0.025, "dog"),     # overlaps frames 1 and 2 partially
        Event("a", 0.07, 0.2, "speech"),     # runs past the end: clipped at frame 9
        Event("a", 0.05, 0.05, "cat"),       # zero length: nothing
    ]
    expected = np.zeros((10, 3), np.float32)
    expected[0:3, 0] = 1
    expected[1:3, 1] = 1
    expected[7:10, 2] = 1
    out = events_to_frames(events, CLASSES, num_frames=10, frames_per_second=100)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


def test_events_to_frames_golden_25_fps():
    # 25 fps: frame i covers [0.04 i, 0.04 (i + 1)).
    events = [
        Event("a", 0.05, 0.13, "cat"),   # 1.25 .. 3.25 -> frames 1, 2, 3
        Event("a", 0.08, 0.16, "dog"),   # on the grid: frames 2, 3
        Event("a", 0.29, 0.57, "speech"),  # 7.25 .. 14.25 -> frames 7..14, clipped at 11
    ]
    expected = np.zeros((12, 3), np.float32)
    expected[1:4, 0] = 1
    expected[2:4, 1] = 1
    expected[7:12, 2] = 1
    np.testing.assert_array_equal(events_to_frames(events, CLASSES, 12, 25), expected)


def test_events_to_frames_unknown_label():
    with pytest.raises(LabelError, match="clip.wav: unknown label 'bird'"):
        events_to_frames([Event("clip.wav", 0, 1, "bird")], CLASSES, 10, 100)


@pytest.mark.parametrize("fps", [100, 50, 25, 10, 8])
def test_frames_to_events_round_trip_on_grid(fps):
    num_frames = 4 * fps  # 4 s
    grid = [(0, 3, "cat"), (5, 9, "cat"), (2, num_frames, "dog"), (1, 2, "speech"), (17, 31, "speech")]
    events = sorted((Event("f.wav", a / fps, b / fps, label) for a, b, label in grid),
                    key=lambda e: (e.onset_seconds, e.label))
    matrix = events_to_frames(events, CLASSES, num_frames, fps)
    assert matrix.sum() == sum(b - a for a, b, _ in grid)
    back = frames_to_events(matrix, CLASSES, fps, "f.wav")
    assert back == events


def test_frames_to_events_times_at_pooled_rate():
    matrix = np.zeros((10, 1))
    matrix[3:7, 0] = 1
    assert frames_to_events(matrix, ["dog"], 25, "x") == [Event("x", 0.12, 0.28, "dog")]
    with pytest.raises(ValueError, match="expected"):
        frames_to_events(np.zeros((10, 2)), ["dog"], 25, "x")


def test_resample_frames_max_over_blocks_and_drops_tail():
    matrix = np.zeros((10, 2), np.float32)
    matrix[1, 0] = 1      # block 0
    matrix[7, 0] = 1      # block 1
    matrix[9, 1] = 1      # ragged tail (frames 8, 9): dropped
    out = resample_frames(matrix, 4)
    np.testing.assert_array_equal(out, [[1, 0], [1, 0]])
    # 100 fps strong targets pooled by 4 equal the targets computed at 25 fps for on-grid events.
    events = [Event("a", 0.08, 0.32, "cat"), Event("a", 0.4, 0.84, "dog")]
    np.testing.assert_array_equal(resample_frames(events_to_frames(events, CLASSES, 100, 100), 4),
                                  events_to_frames(events, CLASSES, 25, 25))


def test_weak_vector_and_frames_to_weak():
    np.testing.assert_array_equal(weak_vector(["speech", "cat", "cat"], CLASSES), [1, 0, 1])
    np.testing.assert_array_equal(weak_vector([], CLASSES), [0, 0, 0])
    assert weak_vector(["dog"], CLASSES).dtype == np.float32
    with pytest.raises(LabelError, match="clip7.wav: unknown label 'bird'"):
        weak_vector(["bird"], CLASSES, where="clip7.wav")
    frames = np.zeros((5, 3), np.float32)
    frames[2, 1] = 1
    np.testing.assert_array_equal(frames_to_weak(frames), [0, 1, 0])


def test_weak_from_strong():
    events = {
        "a.wav": [Event("a.wav", 0, 1, "dog"), Event("a.wav", 2, 3, "cat"), Event("a.wav", 4, 5, "dog")],
        "b.wav": [],
    }
    assert weak_from_strong(events) == {"a.wav": ["cat", "dog"], "b.wav": []}
