"""Self-supervised triplets after Jansen et al. (ICASSP 2018), on log-mel windows.

No labels: a positive is made from the anchor by one of four rules, and the negatives are
the other examples of the batch (a random other example, as in the paper).

* ``noise``: Gaussian noise added to the recording, done in the mel-power domain: each
  time-mel bin gets an exponentially distributed power (the power of a Gaussian STFT bin)
  whose mean lies an SNR drawn uniformly from ``noise_snr_db`` below the anchor's mean power.
* ``shift``: a random circular shift in time plus a random *truncated* shift in frequency
  (up to ``freq_shift_bands_max`` mel bands, the vacated bands repeat the edge band).
* ``mix``: the anchor mixed with another example of the sources, that example
  ``mix_gain_db`` (uniform) below it, so the anchor's sounds dominate the mixture.
* ``proximity``: another window of the same recording starting within
  ``proximity_frames`` of the anchor (not the anchor itself); a recording with no room for
  a second window falls back to ``shift``.

Joint training ("randomly shuffle all training triplet sets together"): each pair draws its
rule uniformly from ``methods``, so every batch mixes them. A batch is ``(x, y)`` with
``x`` = (2 * pairs, window_frames, n_mels): the anchors, then their positives in the same
order; ``y`` = pair ids (2 * pairs,), which :class:`~sedweak.embeddings.losses.TripletLoss`
reads as classes: each anchor's positive is its pair, its negatives every other row.
Batches are seeded by (seed, epoch, batch), so a resumed run sees the same ones.

Channel views (``view_gain_db_max``, ``view_tilt_db_max``; 0 = off, the paper's setting):
every window of the batch -- anchor and positive alike, independently -- then gets a
uniform gain in [-g, g] dB and a spectral tilt, a line over the mel bands from -t/2 to
+t/2 dB with t uniform in [-tilt, tilt]. A pair then differs in level and microphone
colour as recordings of two collections do, which the four rules alone never ask the
network to ignore (the model's input BatchNorm has fixed per-band statistics, so a level or
tilt change reaches the convolutions). Drawn from their own stream: the windows and rules
are the batches' without views.

Semi-supervised mixes (Jansen et al. also add a few labelled triplets): with
``labelled_fraction`` > 0, ``round(labelled_fraction * pairs)`` pairs of every batch (Python's
round: to nearest, ties to even) are *labelled pairs* -- anchor and positive are windows of
two different recordings of one class -- and the others are self-supervised as above. See
:meth:`SelfSupervisedTriplets.pair_ids` for the ids that keep the in-batch negatives right.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from sedweak.config.schema import SELF_SUPERVISED_METHODS as POSITIVE_METHODS
from sedweak.embeddings.sampling import EpochBatches
from sedweak.errors import DataError
from sedweak.features import mix_logmels, shift_bands


def noisy(rng: np.random.Generator, x: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` (frames, mels) dB plus white noise at ``snr_db`` below its mean power."""
    level = np.mean(10.0 ** (x.astype(np.float64) / 10.0)) * 10.0 ** (-snr_db / 10.0)
    noise = 10.0 * np.log10(level * rng.exponential(1.0, x.shape) + 1e-30)
    return mix_logmels(x, noise.astype(np.float32), 0.0)


def shifted(rng: np.random.Generator, x: np.ndarray, freq_shift_bands_max: int) -> np.ndarray:
    """Circular time shift (any amount) and truncated frequency shift of ``x`` (frames, mels)."""
    out = np.roll(x, int(rng.integers(x.shape[0])), axis=0)
    limit = min(freq_shift_bands_max, x.shape[1] - 1)
    return shift_bands(out, int(rng.integers(-limit, limit + 1))) if limit > 0 else out


def recoloured(rng: np.random.Generator, x: np.ndarray, gain_db_max: float, tilt_db_max: float) -> np.ndarray:
    """``x`` (frames, mels) dB plus a uniform gain in [-gain_db_max, gain_db_max] dB and a
    linear tilt over the bands, from -t/2 (lowest band) to +t/2 dB (highest), t uniform in
    [-tilt_db_max, tilt_db_max]: a level and a microphone colour."""
    gain = rng.uniform(-gain_db_max, gain_db_max)
    tilt = rng.uniform(-tilt_db_max, tilt_db_max) * (np.linspace(-0.5, 0.5, x.shape[1]) if x.shape[1] > 1 else 0.0)
    return (x + gain + tilt).astype(np.float32)


def class_recordings(source_labels: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Class -> indices of its recordings (sorted by class) in ``source_labels`` (one class
    name per recording, None = unlabelled). A class with a single recording can form no
    labelled pair: it is left out with a warning."""
    members: dict[str, list[int]] = {}
    for index, label in enumerate(source_labels):
        if label is not None:
            members.setdefault(label, []).append(index)
    single = sorted(label for label, indices in members.items() if len(indices) < 2)
    if single:
        warnings.warn(f"labelled pairs: class(es) {single} have a single recording, so no labelled pair; "
                      "skipped (their recordings still give self-supervised pairs)", stacklevel=3)
    return {label: np.array(members[label]) for label in sorted(members) if label not in single}


class SelfSupervisedTriplets(EpochBatches):
    """Batches of (anchor, positive) windows from unlabelled log-mel recordings (module docstring).

    Args:
        sources: log-mels (frames, n_mels) in dB, one per recording; a recording shorter
            than a window is padded with ``floor_db``.
        window_frames: frames per example (the model's input length).
        pairs_per_batch: anchors per batch (the batch holds twice as many rows).
        batches_per_epoch: batches per epoch.
        methods: the rules in use, a subset of :data:`POSITIVE_METHODS`.
        source_labels: the class of each recording (None: unlabelled, e.g. a background);
            needed when ``labelled_fraction`` > 0.
        labelled_fraction: the share of each batch's pairs that are labelled pairs, 0..1.
        view_gain_db_max, view_tilt_db_max: the channel views (module docstring); 0: off.

    Raises:
        ValueError: bad sizes or methods; :class:`DataError` (a ValueError) when
            ``labelled_fraction`` > 0 and no class has two recordings, or labelled pairs
            would fill the batch with one class (no negatives).
    """

    def __init__(self, sources: Sequence[np.ndarray], window_frames: int, pairs_per_batch: int = 16,
                 batches_per_epoch: int = 50, methods: Sequence[str] = POSITIVE_METHODS, seed: int = 0,
                 noise_snr_db: tuple[float, float] = (0.0, 20.0), freq_shift_bands_max: int = 4,
                 mix_gain_db: tuple[float, float] = (-12.0, -3.0), proximity_frames: int = 500,
                 floor_db: float = -100.0, source_labels: Sequence[str | None] | None = None,
                 labelled_fraction: float = 0.0, view_gain_db_max: float = 0.0, view_tilt_db_max: float = 0.0):
        super().__init__(workers=1, use_multiprocessing=False)
        unknown = sorted(set(methods) - set(POSITIVE_METHODS))
        if unknown or not methods:
            raise ValueError(f"methods must be a non-empty subset of {POSITIVE_METHODS}, got {list(methods)}")
        if not sources:
            raise ValueError("no recordings to sample from")
        if view_gain_db_max < 0 or view_tilt_db_max < 0:
            raise ValueError(f"view_gain_db_max and view_tilt_db_max must be >= 0, got {view_gain_db_max}, "
                             f"{view_tilt_db_max}")
        if pairs_per_batch < 2 or batches_per_epoch < 1 or window_frames < 1:
            raise ValueError("need pairs_per_batch >= 2 (the negatives are the other pairs), "
                             "batches_per_epoch >= 1 and window_frames >= 1")
        self.sources = [self._at_least(np.asarray(s, np.float32), window_frames, floor_db) for s in sources]
        self.window_frames, self.pairs_per_batch = int(window_frames), int(pairs_per_batch)
        self.batches_per_epoch, self.methods, self.seed = int(batches_per_epoch), tuple(methods), seed
        self.noise_snr_db, self.freq_shift_bands_max = noise_snr_db, int(freq_shift_bands_max)
        self.mix_gain_db, self.proximity_frames = mix_gain_db, int(proximity_frames)
        lengths = np.array([len(s) - window_frames + 1 for s in self.sources], np.float64)
        self.weights = lengths / lengths.sum()   # every window start of every recording equally likely
        self.labelled_pairs, self.classes = self._labelled_setup(source_labels, labelled_fraction)
        self.view_gain_db_max, self.view_tilt_db_max = float(view_gain_db_max), float(view_tilt_db_max)
        self.epoch = 0

    def _labelled_setup(self, source_labels, fraction: float) -> tuple[int, dict[str, np.ndarray]]:
        """(labelled pairs per batch, class -> its recordings' indices) after the checks."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"labelled_fraction must be in [0, 1], got {fraction}")
        count = round(fraction * self.pairs_per_batch)
        if count == 0:
            if fraction > 0:
                warnings.warn(f"labelled_fraction {fraction} x {self.pairs_per_batch} pairs rounds to no "
                              "labelled pair per batch", stacklevel=3)
            return 0, {}
        if source_labels is None or len(source_labels) != len(self.sources):
            given = "no" if source_labels is None else len(source_labels)
            raise ValueError(f"labelled_fraction > 0 needs source_labels, one (or None) per recording: "
                             f"{len(self.sources)} recordings, {given} labels")
        classes = class_recordings(source_labels)
        if not classes:
            raise DataError("labelled_fraction > 0 but no class has two or more recordings to form a labelled pair")
        if count == self.pairs_per_batch and len(classes) < 2:
            raise DataError(f"labelled_fraction {fraction} fills every batch with pairs of the one class "
                            f"{list(classes)}: no negatives; lower it or add recordings of another class")
        return count, classes

    @staticmethod
    def _at_least(x: np.ndarray, frames: int, floor_db: float) -> np.ndarray:
        if len(x) >= frames:
            return x
        return np.concatenate([x, np.full((frames - len(x), x.shape[1]), floor_db, np.float32)])

    def window(self, rng: np.random.Generator) -> tuple[int, int, np.ndarray]:
        """(recording, start, window) drawn uniformly over all window positions."""
        source = int(rng.choice(len(self.sources), p=self.weights))
        start, window = self.window_of(rng, source)
        return source, start, window

    def window_of(self, rng: np.random.Generator, source: int) -> tuple[int, np.ndarray]:
        """(start, window (window_frames, n_mels)) at a uniform start in recording ``source``."""
        start = int(rng.integers(len(self.sources[source]) - self.window_frames + 1))
        return start, self.sources[source][start:start + self.window_frames]

    def positive(self, rng: np.random.Generator, method: str, source: int, start: int,
                 anchor: np.ndarray) -> np.ndarray:
        if method == "noise":
            return noisy(rng, anchor, float(rng.uniform(*self.noise_snr_db)))
        if method == "mix":
            _, _, other = self.window(rng)
            return mix_logmels(anchor, other, float(rng.uniform(*self.mix_gain_db)))
        if method == "proximity":
            recording = self.sources[source]
            low = max(0, start - self.proximity_frames)
            high = min(len(recording) - self.window_frames, start + self.proximity_frames)
            if high > low:   # room for a window other than the anchor's
                near = int(rng.integers(low, high))        # [low, high) then skip the anchor's own start
                near = near + 1 if near >= start else near
                return recording[near:near + self.window_frames]
        return shifted(rng, anchor, self.freq_shift_bands_max)

    def labelled(self, rng: np.random.Generator, count: int) -> tuple[list, list, np.ndarray]:
        """``count`` labelled pairs: (anchors, positives: ``count`` windows (window_frames,
        n_mels) each, class indices into :attr:`classes` (count,)). Classes are
        dealt from seeded shuffles of all of them, so a batch holds min(count, classes)
        distinct ones; each pair takes two different recordings of its class (uniformly)
        and a uniform window in each."""
        names = list(self.classes)
        order = np.concatenate([rng.permutation(len(names)) for _ in range(-(-count // len(names)))])[:count]
        anchors, positives = [], []
        for k in order:
            first, second = rng.choice(self.classes[names[k]], size=2, replace=False)
            anchors.append(self.window_of(rng, int(first))[1])
            positives.append(self.window_of(rng, int(second))[1])
        return anchors, positives, order.astype(np.int32)

    def pair_ids(self, class_indices: np.ndarray) -> np.ndarray:
        """Ids (2 * pairs,) for the batch's anchors then positives, which TripletLoss reads as
        classes (equal id: positive; different id: negative).

        Self-supervised pair i (first in the batch) gets id i: its only positive is its own
        pair. A labelled pair of class k gets ``pairs_per_batch + k``: every window of one
        class in the batch is a positive of the others and never a negative of them. The two
        ranges are disjoint because a self-supervised pair sharing a class id would make
        windows of unrelated recordings positives of that class. (A self-supervised window
        may still be a negative of a labelled one of its own, unknown, class: the risk of
        in-batch negatives the self-supervised rules already take.) With no labelled pair
        this is today's ``[0 .. pairs - 1]`` twice.
        """
        selfsupervised = np.arange(self.pairs_per_batch - len(class_indices), dtype=np.int32)
        return np.tile(np.concatenate([selfsupervised, self.pairs_per_batch + class_indices]).astype(np.int32), 2)

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index, 0x6A616E])   # "jan"
        anchors, positives = [], []
        for _ in range(self.pairs_per_batch - self.labelled_pairs):
            method = self.methods[int(rng.integers(len(self.methods)))]
            source, start, anchor = self.window(rng)
            anchors.append(anchor)
            positives.append(self.positive(rng, method, source, start, anchor))
        classes = np.zeros(0, np.int32)
        if self.labelled_pairs:   # its own stream: the self-supervised draws above stay as without it
            labelled_rng = np.random.default_rng([self.seed, self.epoch, index, 0x6C6162])   # "lab"
            more_anchors, more_positives, classes = self.labelled(labelled_rng, self.labelled_pairs)
            anchors, positives = anchors + more_anchors, positives + more_positives
        x = np.stack(anchors + positives).astype(np.float32)
        if self.view_gain_db_max or self.view_tilt_db_max:   # its own stream too
            view_rng = np.random.default_rng([self.seed, self.epoch, index, 0x766965])   # "vie"
            x = np.stack([recoloured(view_rng, row, self.view_gain_db_max, self.view_tilt_db_max) for row in x])
        return x, {"embedding": self.pair_ids(classes)}
