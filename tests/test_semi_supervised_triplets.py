"""Semi-supervised triplet batches (``pretrain.labelled_fraction``): the exact share of
labelled pairs, their recordings and classes, the ids TripletLoss reads, golden equality
with the self-supervised batches at fraction 0, seeding and resuming, refusals, and
``sedweak pretrain`` on the toy bank."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
from click.testing import CliRunner

from sedweak.cli import main
from sedweak.config import ConfigError, load_config
from sedweak.embeddings.self_supervised import SelfSupervisedTriplets
from sedweak.errors import DataError

W, MELS, PAIRS = 20, 8, 8
# Recording r (150 frames) of class CLASSES[r]: band 0 of frame t holds -(1000 r + t) dB, band 1
# holds 100 x (class index + 1) (0 for a background, None): a window tells its recording,
# start and class.
CLASSES = ["dog", "dog", "dog", "bell", "bell", None, None, "cat"]


def recording(r: int, frames: int = 150) -> np.ndarray:
    x = np.full((frames, MELS), -60.0, np.float32)
    x[:, 0] = -(1000.0 * r + np.arange(frames))
    label = CLASSES[r]
    x[:, 1] = 0.0 if label is None else 100.0 * (sorted(set(CLASSES) - {None}).index(label) + 1)
    return x


def decode(window: np.ndarray) -> tuple[int, int]:
    """(recording, start) of an unaltered window."""
    recording_index, start = divmod(-int(window[0, 0]), 1000)
    assert np.array_equal(window[:, 0], window[0, 0] - np.arange(len(window)))   # not noised, shifted or mixed
    return recording_index, start


def sampler(fraction: float, labels=tuple(CLASSES), **kwargs) -> SelfSupervisedTriplets:
    sources = [recording(r) for r in range(len(labels))]
    options = {"pairs_per_batch": PAIRS, "batches_per_epoch": 3, "seed": 5, "source_labels": list(labels),
               "labelled_fraction": fraction}
    single = "cat" in labels and fraction > 0   # 'cat' has one recording: skipped, with a warning
    with pytest.warns(UserWarning, match=r"\['cat'\] have a single recording") if single else nullcontext():
        return SelfSupervisedTriplets(sources, W, **{**options, **kwargs})


def halves(batch):
    x, y = batch
    return x[:PAIRS], x[PAIRS:], y["embedding"]


@pytest.mark.parametrize("fraction, expected", [(0.25, 2), (0.5, 4), (0.6, 5), (1.0, 8)])
def test_each_batch_holds_round_fraction_x_pairs_labelled_pairs(fraction, expected):
    data = sampler(fraction)
    for index in range(len(data)):
        anchors, positives, ids = halves(data[index])
        assert anchors.shape == positives.shape == (PAIRS, W, MELS) and ids.shape == (2 * PAIRS,)
        assert int((ids[:PAIRS] >= PAIRS).sum()) == expected                 # class ids
        assert len(set(ids[ids >= PAIRS].tolist())) == min(expected, 2)      # classes dealt evenly: both
        assert ids[:PAIRS - expected].tolist() == list(range(PAIRS - expected))   # self-supervised first


def test_labelled_pairs_are_windows_of_two_recordings_of_one_class():
    """Anchor and positive: unaltered windows of two different recordings whose class is
    the pair's id; never a background, never the class with one recording ('cat')."""
    names = ["bell", "dog"]   # the classes that can pair, sorted: class index k -> id PAIRS + k
    seen = set()
    data = sampler(1.0)
    for index in range(len(data)):
        anchors, positives, ids = halves(data[index])
        for a, p, pair_id in zip(anchors, positives, ids[:PAIRS]):
            (ra, start_a), (rp, start_p) = decode(a), decode(p)
            assert ra != rp and CLASSES[ra] == CLASSES[rp] == names[pair_id - PAIRS]
            assert a[0, 1] == p[0, 1] != 0.0                                   # the class band agrees
            assert 0 <= start_a <= 150 - W and 0 <= start_p <= 150 - W
            seen.add(CLASSES[ra])
    assert seen == {"bell", "dog"}


def test_ids_make_same_class_windows_positives_never_negatives_and_stay_off_self_supervised_ids():
    from sedweak.embeddings.losses import pair_relations

    data = sampler(0.5)
    for index in range(len(data)):
        x, y = data[index]
        ids = y["embedding"]
        same, different = (np.asarray(m) for m in pair_relations(ids))
        classes = [CLASSES[decode(w)[0]] if i >= PAIRS else None for w, i in zip(x, ids)]
        labelled = [i for i, c in enumerate(classes) if c is not None]
        for i in labelled:
            for j in labelled:
                assert same[i, j] == (classes[i] == classes[j]) and different[i, j] == (classes[i] != classes[j])
        assert ids[:PAIRS].tolist() == ids[PAIRS:].tolist()                  # each anchor's positive is its pair
        self_supervised = ids[:PAIRS][ids[:PAIRS] < PAIRS]
        assert len(set(self_supervised.tolist())) == len(self_supervised) == 4   # unique, and no class id
        assert not set(self_supervised.tolist()) & set(ids[ids >= PAIRS].tolist())
    one_class = sampler(0.5, labels=["dog", "dog", None])                    # 4 labelled pairs, all 'dog'
    ids = one_class[0][1]["embedding"]
    assert ids.tolist() == [0, 1, 2, 3] + [PAIRS] * 4 + [0, 1, 2, 3] + [PAIRS] * 4


def ramp(frames, offset):
    return np.repeat(np.arange(frames, dtype=np.float32)[:, None] + offset, MELS, axis=1) - 60.0


def test_fraction_0_gives_the_self_supervised_batches_of_before():
    """Golden values of SelfSupervisedTriplets before labelled pairs existed (commit a8e6554),
    all four rules: seed 3, epoch 2, batch 1; labels given or not."""
    sources = [ramp(60 + 20 * r, 1000.0 * r) for r in range(4)]
    for labels in (None, ["a", "a", "b", None]):
        data = SelfSupervisedTriplets(sources, W, pairs_per_batch=6, batches_per_epoch=3, seed=3,
                                      proximity_frames=10, source_labels=labels, labelled_fraction=0.0)
        data.set_epoch(2)
        x, y = data[1]
        assert x[:6, 0, 0].tolist() == [-38.0, 2984.0, 999.0, 1980.0, 1958.0, 2960.0]
        np.testing.assert_allclose(x[6:, 0, 0], [-33.0, 2989.0, 999.002, 1971.0, 1977.0, 2951.0], atol=1e-3)
        assert float(x.astype(np.float64).sum()) == pytest.approx(3485920.390625, rel=1e-7)
        assert y["embedding"].tolist() == list(range(6)) * 2


def test_labelled_pairs_leave_the_self_supervised_draws_alone():
    """The labelled pairs have their own seeded stream: a batch's self-supervised pairs are
    the first ones of the same batch at fraction 0."""
    plain, mixed = sampler(0.0)[2][0], sampler(0.5)[2][0]
    np.testing.assert_array_equal(mixed[:4], plain[:4])
    np.testing.assert_array_equal(mixed[PAIRS:PAIRS + 4], plain[PAIRS:PAIRS + 4])


def test_batches_are_fixed_by_seed_epoch_and_batch_and_resume():
    data = sampler(0.5)
    first = [data[i][0] for i in range(3)]
    np.testing.assert_array_equal(data[1][0], first[1])
    assert not np.array_equal(first[0], first[1])
    data.on_epoch_end()
    data.on_epoch_end()
    resumed = sampler(0.5)
    resumed.set_epoch(2)                      # what run_pretrain does on --resume
    labelled = slice(PAIRS - 4, PAIRS)   # the labelled anchors, too, change with the epoch and the seed
    for i in range(3):
        np.testing.assert_array_equal(resumed[i][0], data[i][0])
        assert not np.array_equal(resumed[i][0][labelled], first[i][labelled])
    assert not np.array_equal(sampler(0.5, seed=6)[0][0][labelled], first[0][labelled])


def test_impossible_labelled_pairs_are_refused():
    with pytest.warns(UserWarning, match=r"\['a', 'b'\] have a single recording"), \
            pytest.raises(DataError, match="no class has two or more recordings"):
        sampler(0.5, labels=["a", "b", None])
    with pytest.raises(DataError, match="one class .*no negatives"):
        sampler(1.0, labels=["dog", "dog", None])
    with pytest.raises(ValueError, match="needs source_labels"):
        sampler(0.5, labels=["dog", "dog"], source_labels=None)
    with pytest.raises(ValueError, match=r"labelled_fraction must be in \[0, 1\]"):
        sampler(1.5, labels=["dog", "dog"])
    with pytest.warns(UserWarning, match="rounds to no labelled pair"):
        assert sampler(0.05, labels=["dog", "dog"]).labelled_pairs == 0
    with pytest.raises(ConfigError, match=r"pretrain.labelled_fraction must be in \[0, 1\]"):
        load_config(None, ["pretrain.labelled_fraction=-0.1"])
    with pytest.raises(ConfigError, match="pretrain.labelled_fraction 0.5 needs class labels.*source: folder"):
        load_config(None, ["pretrain.source=folder", "pretrain.folder=/tmp", "pretrain.labelled_fraction=0.5"])


def test_pretrain_reads_classes_from_the_bank_and_names_the_setting(tiny_recipe):
    from sedweak.training.pretrain import source_classes, source_files, triplet_batches

    recipe, overrides = tiny_recipe
    config = load_config(recipe, overrides + ["pretrain.labelled_fraction=0.5", "pretrain.window_seconds=0.5"])
    files = source_files(config)
    labels = source_classes(config, files)
    assert {f.parent.name for f, c in zip(files, labels) if c is None} == {"hum", "hiss"}   # backgrounds
    assert all(f.parent.name == c for f, c in zip(files, labels) if c is not None)
    assert sorted(c for c in labels if c) == ["Beep", "Beep", "Buzz", "Buzz", "Chirp", "Chirp"]
    fake = [np.zeros((60, 64), np.float32)] * 3
    with pytest.warns(UserWarning), pytest.raises(DataError, match="toy_bank.*pretrain.labelled_fraction=0.5"):
        triplet_batches(config, fake, ["Beep", "Buzz", None])


@pytest.mark.slow   # the batches are pinned above; this is the CLI path end to end
def test_cli_pretrain_with_labelled_pairs_on_the_toy_bank(tmp_path, tiny_recipe):
    recipe, overrides = tiny_recipe
    sets = [x for o in overrides + ["pretrain.window_seconds=0.5", "pretrain.labelled_fraction=0.5"]
            for x in ("--set", o)]
    result = CliRunner().invoke(main, ["pretrain", str(recipe), "--workdir", str(tmp_path / "pre"),
                                       "--fast-dev-run", *sets], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pre" / "model.keras").is_file()
    assert "labelled_fraction: 0.5" in (tmp_path / "pre" / "config.yaml").read_text()
    refused = CliRunner().invoke(main, ["pretrain", str(recipe), "--workdir", str(tmp_path / "folder"),
                                        "--audio", str(tmp_path), *sets])
    assert refused.exit_code != 0 and "pretrain.labelled_fraction 0.5 needs class labels" in refused.output
