"""The configuration's schema: one frozen dataclass per concern, units in the names,
and the allowed values of every choice, each list with one home here (layers, readers,
the CLI and export import them from here; nothing here imports the rest of sedweak).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from sedweak.errors import UserError

# Allowed values, one home each.
DATASETS = ("audioset", "dcase2017_task4", "desed", "folder", "generic", "synth", "urbansed", "urbansound8k")
WEAK_POOLINGS = ("max", "mean", "attention", "linear_softmax")
CONV_ACTIVATIONS = ("relu", "glu")
STRATEGIES = ("default", "mirrored", "multiworker", "data_parallel")
SAMPLINGS = ("shuffle", "balanced")
CLASS_WEIGHTINGS = ("none", "inverse_frequency", "sqrt_inverse")
EXPORT_MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
EXPORT_GRAPHS = ("auto", "whole_clip", "staged", "streaming")
SPLIT_BY = ("recording", "collection")
EMBEDDING_METHODS = ("triplet",)
SELF_SUPERVISED_METHODS = ("noise", "shift", "mix", "proximity")  # Jansen et al.'s positives
PRETRAIN_SOURCES = ("train_bank", "folder")
TRIPLET_MININGS = ("random", "semihard", "hard")
TASKS = ("detection", "waa")
WAA_METHODS = ("classifier", "triplet", "prototypical")  # Turpault et al.'s three ways to learn E


class ConfigError(UserError, ValueError):
    """A recipe or override that does not describe a valid configuration."""


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front end (Turpault et al. / Adavanne & Virtanen setting)."""

    sample_rate_hz: int = 16000
    window_seconds: float = 0.025
    hop_seconds: float = 0.010
    n_fft: int = 512
    n_mels: int = 64
    mel_min_hz: float = 0.0
    mel_max_hz: float = 8000.0
    amin_power: float = 1e-10  # floor before log10, as librosa.power_to_db's amin

    def __post_init__(self) -> None:
        _check(self.sample_rate_hz > 0, "features.sample_rate_hz must be > 0")
        _check(self.window_samples <= self.n_fft, "features.window_seconds exceeds n_fft")
        _check(self.hop_samples > 0, "features.hop_seconds is too small")
        _check(0 <= self.mel_min_hz < self.mel_max_hz <= self.sample_rate_hz / 2,
               "features: need 0 <= mel_min_hz < mel_max_hz <= sample_rate_hz / 2")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate_hz))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_seconds * self.sample_rate_hz))

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate_hz / self.hop_samples

    def num_frames(self, num_samples: int) -> int:
        """Frames for a signal of ``num_samples``: frame i covers [i*hop, (i+1)*hop)."""
        return num_samples // self.hop_samples


@dataclass(frozen=True)
class RemixConfig:
    """The ``eval_remix`` split: unseen collections mixed differently from training (another
    SNR range, more events, wider onsets, random background and event gains), so a score
    on it measures what a model keeps when both the recordings and the mixing change."""

    num_clips: int = 0  # 0: no such split
    min_events: int = 0
    max_events: int = 5
    snr_min_db: float = 0.0
    snr_max_db: float = 24.0
    onset_std_seconds: float = 4.0  # near-uniform over the clip (training: 2 s around 5 s)
    background_gain_jitter_db: float = 8.0  # per clip, uniform +-: the whole mix louder or softer
    event_gain_jitter_db: float = 4.0  # per event, uniform +-, on top of its SNR draw

    def __post_init__(self) -> None:
        _check(self.num_clips >= 0, "synth.remix.num_clips must be >= 0")
        _check(0 <= self.min_events <= self.max_events, "synth.remix: need 0 <= min_events <= max_events")
        _check(self.snr_min_db <= self.snr_max_db, "synth.remix: need snr_min_db <= snr_max_db")
        _check(self.onset_std_seconds >= 0, "synth.remix.onset_std_seconds must be >= 0")
        _check(self.background_gain_jitter_db >= 0 and self.event_gain_jitter_db >= 0,
               "synth.remix: gain jitters must be >= 0 dB")


@dataclass(frozen=True)
class SynthConfig:
    """Scaper-like soundscape synthesis from a sound bank (see ``sedweak.synth``)."""

    mode: str = "multi"  # "waa": exactly one event per clip; "multi": 0..max_events
    num_train_clips: int = 400
    num_valid_clips: int = 80
    num_eval_clips: int = 100
    max_events: int = 3
    min_events: int = 0
    onset_mean_seconds: float = 5.0
    onset_std_seconds: float = 2.0
    onset_min_seconds: float = 0.25
    onset_max_seconds: float = 10.0
    snr_min_db: float = 6.0
    snr_max_db: float = 30.0
    allow_same_class_overlap: bool = False
    background_gain_db: float = -20.0  # background level relative to full scale (RMS dBFS)
    seed: int = 0
    # How the bank is split before mixing: "recording" (train / valid / eval disjoint by source
    # recording) or "collection" (eval from whole collections -- the manifest's source_package --
    # that training never hears: a measure of generalisation to unseen recordings).
    split_by: str = "recording"
    # split_by: collection only: an "eval_seen" split from recordings of the collections that
    # training hears (held out by recording), to set beside eval's unseen collections.
    num_eval_seen_clips: int = 0
    background_gain_jitter_db: float = 0.0  # per clip, uniform +- around background_gain_db
    event_gain_jitter_db: float = 0.0  # per event, uniform +- on top of the SNR draw
    remix: RemixConfig = field(default_factory=RemixConfig)
    # An "unlabelled" split for train.mean_teacher: mixes of the train split's bank files,
    # held out of the labelled training set, whose labels training never reads. 0: none.
    num_unlabelled_clips: int = 0
    # mode waa: clip i's event is of class i mod K (balanced splits, as the WAA set); false:
    # each event's class is drawn uniformly.
    balance_classes: bool = False
    # > 0: every event is cut to at most this long (Turpault et al.'s 200 ms set: 0.2); 0: whole.
    event_max_seconds: float = 0.0

    def __post_init__(self) -> None:
        _check(self.mode in ("waa", "multi"), f"synth.mode must be 'waa' or 'multi', got {self.mode!r}")
        _check(self.split_by in SPLIT_BY, f"synth.split_by must be one of {SPLIT_BY}, got {self.split_by!r}")
        _check(0 <= self.min_events <= self.max_events, "synth: need 0 <= min_events <= max_events")
        _check(self.snr_min_db <= self.snr_max_db, "synth: need snr_min_db <= snr_max_db")
        _check(self.onset_min_seconds <= self.onset_max_seconds, "synth: onset bounds reversed")
        _check(self.num_eval_seen_clips >= 0, "synth.num_eval_seen_clips must be >= 0")
        _check(self.num_unlabelled_clips >= 0, "synth.num_unlabelled_clips must be >= 0")
        _check(self.num_eval_seen_clips == 0 or self.split_by == "collection",
               "synth.num_eval_seen_clips needs split_by: collection (with split_by: recording "
               "the eval split already comes from the collections training hears)")
        _check(self.background_gain_jitter_db >= 0 and self.event_gain_jitter_db >= 0,
               "synth: gain jitters must be >= 0 dB")
        _check(self.event_max_seconds >= 0, "synth.event_max_seconds must be >= 0 (0: events keep their length)")
        _check(not self.balance_classes or self.mode == "waa",
               "synth.balance_classes needs mode: waa (one event per clip, so clip i can carry class i mod K)")


@dataclass(frozen=True)
class DataConfig:
    """Where clips and labels come from."""

    dataset: str = "synth"  # "synth": synthesize from a sound bank; "folder": an existing set
    # Dataset folder (audio/<split>/*.wav, metadata/<split>.tsv, metadata/<split>_weak.tsv).
    # Empty: <workdir>/data. For "synth" it is where the soundscapes are written.
    root: str = ""
    soundbank: str = "embedded"  # "embedded" or a path laid out like shared/soundbank
    classes: tuple[str, ...] = ()  # empty: every foreground class of the bank
    clip_seconds: float = 10.0
    label_type: str = "strong"  # "strong": frame targets from TSV; "weak": clip tags only
    synth: SynthConfig = field(default_factory=SynthConfig)
    # Options of the dataset's reader (sedweak/datasets/<reader>.py), validated by it.
    reader_options: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        _check(self.dataset in DATASETS, f"data.dataset must be one of {list(DATASETS)}, got {self.dataset!r}")
        _check(self.label_type in ("strong", "weak"), "data.label_type must be 'strong' or 'weak'")
        _check(self.clip_seconds > 0, "data.clip_seconds must be > 0")
        _check(len(set(self.classes)) == len(self.classes), "data.classes has duplicates")


@dataclass(frozen=True)
class AugmentConfig:
    """Seeded on-the-fly augmentation of training log-mels (none at validation)."""

    gain_db_max: float = 6.0  # uniform gain in [-max, +max] dB (a shift of the log-mel)
    time_shift: bool = True  # circular shift of features and strong targets together
    freq_mask_bands_max: int = 8  # SpecAugment-style: one band block set to the clip mean
    mix_probability: float = 0.3  # mix with another clip (power domain), targets united
    freq_shift_bands_max: int = 0  # roll the mel axis by k in [-max, max] bins, edge bin repeated; 0: off
    # SpecAugment time mask: one block of up to this many feature frames set to the clip mean;
    # targets unchanged, and a mask that would hide a whole labelled event is skipped. 0: off.
    time_mask_frames_max: int = 0
    # Dynamic mixing (data.dataset: synth only): every training batch is fresh soundscapes,
    # mixed (in the mel-power domain, sedweak.training.dynamic_mix) from the train split's
    # bank files with the data.synth settings, instead of the fixed train split.
    dynamic_mixing: bool = False
    # Mixup of a whole batch with a permutation of itself (DESED baseline: mel power mixed,
    # lambda ~ Beta(alpha, alpha) per batch; "soft" labels lambda-weighted, "hard": union).
    mixup_probability: float = 0.0
    mixup_alpha: float = 0.2
    mixup_labels: str = "soft"
    # Waveform augmentation of each bank event before mixing (dynamic mixing): per event,
    # event_variants copies (the first clean), each with a seeded draw of the following.
    event_variants: int = 4
    event_pitch_semitones_max: float = 2.0  # pitch shift, uniform +- (probability 0.5)
    event_stretch_max: float = 0.15  # time stretch rate uniform in [1 - x, 1 + x] (probability 0.5)
    event_eq_probability: float = 0.5  # seven-band parametric EQ, +-6 dB per band
    event_bandpass_probability: float = 0.25  # band-pass, centre 200-4000 Hz
    event_reverb_probability: float = 0.5  # synthetic room: RT60 0.2-0.8 s, DRR 0-12 dB

    def __post_init__(self) -> None:
        _check(self.gain_db_max >= 0, "augment.gain_db_max must be >= 0")
        _check(self.freq_shift_bands_max >= 0 and self.time_mask_frames_max >= 0,
               "augment.freq_shift_bands_max and augment.time_mask_frames_max must be >= 0")
        _check(self.freq_mask_bands_max >= 0, "augment.freq_mask_bands_max must be >= 0")
        _check(0.0 <= self.mix_probability <= 1.0, "augment.mix_probability must be in [0, 1]")
        _check(0.0 <= self.mixup_probability <= 1.0 and self.mixup_alpha > 0,
               "augment: need 0 <= mixup_probability <= 1 and mixup_alpha > 0")
        _check(self.mixup_labels in ("soft", "hard"), f"augment.mixup_labels must be 'soft' or 'hard', "
                                                      f"got {self.mixup_labels!r}")
        _check(self.event_variants >= 1, "augment.event_variants must be >= 1 (the first is the clean event)")
        _check(self.event_pitch_semitones_max >= 0 and 0 <= self.event_stretch_max < 1,
               "augment: need event_pitch_semitones_max >= 0 and 0 <= event_stretch_max < 1")
        for name in ("event_eq_probability", "event_bandpass_probability", "event_reverb_probability"):
            _check(0.0 <= getattr(self, name) <= 1.0, f"augment.{name} must be in [0, 1]")


@dataclass(frozen=True)
class ModelConfig:
    """CRNN hyper-parameters. ``preset`` names the defaults the other keys override."""

    preset: str = "fast"
    conv_filters: tuple[int, ...] = (16, 32, 64)
    conv_kernel_size: int = 3
    conv_pool_freq: tuple[int, ...] = (4, 4, 4)
    conv_pool_time: tuple[int, ...] = (1, 1, 1)
    conv_activation: str = "relu"  # "relu" or "glu"
    dropout_rate: float = 0.25
    rnn_units: tuple[int, ...] = (32,)  # per direction, one GRU layer per entry
    # Bidirectional GRUs see the whole clip; forward-only ones can stream exactly on a
    # device (export --streaming), at some cost in accuracy.
    rnn_bidirectional: bool = True
    dense_units: tuple[int, ...] = ()
    weak_pooling: str = "linear_softmax"  # max | mean | attention | linear_softmax
    embedding_dim: int = 64

    def __post_init__(self) -> None:
        n = len(self.conv_filters)
        _check(len(self.conv_pool_freq) == n and len(self.conv_pool_time) == n,
               "model: conv_filters, conv_pool_freq and conv_pool_time need the same length")
        _check(self.conv_activation in CONV_ACTIVATIONS,
               f"model.conv_activation must be one of {CONV_ACTIVATIONS}, got {self.conv_activation!r}")
        _check(self.weak_pooling in WEAK_POOLINGS,
               f"model.weak_pooling must be one of {WEAK_POOLINGS}, got {self.weak_pooling!r}")
        _check(0.0 <= self.dropout_rate < 1.0, "model.dropout_rate must be in [0, 1)")
        _check(self.embedding_dim > 0, "model.embedding_dim must be > 0")

    @property
    def time_pooling(self) -> int:
        """Total pooling over time: model frames = feature frames // time_pooling."""
        out = 1
        for p in self.conv_pool_time:
            out *= p
        return out

    def pooled_bands(self, n_mels: int) -> int:
        """Frequency bands left after the conv blocks' pooling (floor at each block)."""
        for pool in self.conv_pool_freq:
            n_mels //= pool
        return n_mels


@dataclass(frozen=True)
class LossConfig:
    """Weighted strong + weak BCE (Adavanne & Virtanen)."""

    strong_weight: float = 1.0
    weak_weight: float = 1.0
    # For clips with weak labels only: "repeat" the clip label on every frame
    # (the paper) or "mask" the strong loss for those clips (DESED practice).
    weak_clip_strong_target: str = "repeat"
    # The CRNN's L2-normalised embedding output, trained jointly: weight 0 leaves it untrained.
    # "triplet": batch-mined triplets on the clips' weak tags (a shared tag = positive, none =
    # negative; sedweak.embeddings.losses.TripletLoss), squared distances, this margin.
    embedding_weight: float = 0.0
    embedding_method: str = "triplet"
    embedding_margin: float = 0.5
    embedding_mining: str = "semihard"  # random | semihard | hard

    def __post_init__(self) -> None:
        _check(self.strong_weight >= 0 and self.weak_weight >= 0 and self.embedding_weight >= 0,
               "loss weights must be >= 0")
        _check(self.embedding_method in EMBEDDING_METHODS,
               f"loss.embedding_method must be one of {EMBEDDING_METHODS}, got {self.embedding_method!r} "
               "(prototypical episodes need one class per clip: the embedding models of sedweak.embeddings)")
        _check(self.embedding_mining in TRIPLET_MININGS,
               f"loss.embedding_mining must be one of {TRIPLET_MININGS}, got {self.embedding_mining!r}")
        _check(self.embedding_margin >= 0, "loss.embedding_margin must be >= 0")
        _check(self.weak_clip_strong_target in ("repeat", "mask"),
               "loss.weak_clip_strong_target must be 'repeat' or 'mask'")


@dataclass(frozen=True)
class MeanTeacherConfig:
    """Mean teacher (Tarvainen & Valpola 2017), as in the DCASE task 4 baseline: an EMA copy
    of the model (the teacher) whose frame and clip outputs the student must match (MSE,
    the consistency loss) on every clip of a batch, labelled or not; the teacher becomes the
    trained model. See ``sedweak.models.mean_teacher``."""

    enabled: bool = False
    ema_decay: float = 0.999  # DESED baseline; warm start min(decay, 1 - 1 / (step + 1))
    consistency_weight: float = 2.0  # DESED baseline's const_max, on strong + weak MSE
    # The weight ramps up as exp(-5 (1 - t)^2), t = step / (rampup_epochs * steps per epoch).
    rampup_epochs: float = 10.0
    # Clips of the "unlabelled" split (synth.num_unlabelled_clips, DESED use_unlabelled)
    # appended to each training batch, with masked targets; unused without such a split.
    unlabelled_per_batch: int = 8
    keep: str = "teacher"  # which network becomes model.keras: "teacher" or "student"

    def __post_init__(self) -> None:
        _check(0.0 <= self.ema_decay < 1.0, "train.mean_teacher.ema_decay must be in [0, 1)")
        _check(self.consistency_weight >= 0, "train.mean_teacher.consistency_weight must be >= 0")
        _check(self.rampup_epochs >= 0, "train.mean_teacher.rampup_epochs must be >= 0")
        _check(self.unlabelled_per_batch >= 0, "train.mean_teacher.unlabelled_per_batch must be >= 0")
        _check(self.keep in ("teacher", "student"),
               f"train.mean_teacher.keep must be 'teacher' or 'student', got {self.keep!r}")


@dataclass(frozen=True)
class PretrainConfig:
    """``sedweak pretrain``: the CRNN trained on unlabelled audio with Jansen et al.'s
    self-supervised triplets (sedweak.embeddings.self_supervised), optionally mixed with
    labelled pairs of the bank's classes (``labelled_fraction``), for ``train.init_from``."""

    # "train_bank": every file (events and backgrounds) of the sound bank's train split, labels
    # unread (a synth recipe); "folder": every audio file under ``folder``.
    source: str = "train_bank"
    folder: str = ""
    window_seconds: float = 1.0  # the model's input while pre-training (Jansen: 0.96 s)
    methods: tuple[str, ...] = SELF_SUPERVISED_METHODS  # each pair draws one uniformly (joint shuffle)
    pairs_per_batch: int = 32
    batches_per_epoch: int = 50
    epochs: int = 20
    learning_rate: float = 1e-3
    margin: float = 0.5
    mining: str = "random"  # the paper's random negative; "semihard" | "hard" mine the batch
    noise_snr_min_db: float = 0.0
    noise_snr_max_db: float = 20.0
    freq_shift_bands_max: int = 4
    mix_gain_min_db: float = -12.0
    mix_gain_max_db: float = -3.0
    proximity_seconds: float = 5.0
    # Share of each batch's pairs that are labelled (0..1; round(share x pairs_per_batch) per
    # batch): anchor and positive are windows of two train-split recordings of one foreground
    # class, id'd by class (sedweak.embeddings.self_supervised). Needs source: train_bank.
    labelled_fraction: float = 0.0
    # Channel views: every window, anchor and positive independently, gets a uniform gain in
    # [-max, max] dB and a linear spectral tilt of up to +-max dB across the bands (lowest to
    # highest); 0: off (Jansen et al.'s rules alone).
    view_gain_db_max: float = 0.0
    view_tilt_db_max: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.source in PRETRAIN_SOURCES, f"pretrain.source must be one of {PRETRAIN_SOURCES}, got {self.source!r}")
        _check(self.source != "folder" or bool(self.folder), "pretrain.source: folder needs pretrain.folder")
        unknown = sorted(set(self.methods) - set(SELF_SUPERVISED_METHODS))
        _check(bool(self.methods) and not unknown,
               f"pretrain.methods must be a non-empty subset of {SELF_SUPERVISED_METHODS}, got {list(self.methods)}")
        _check(self.window_seconds > 0 and self.epochs > 0 and self.batches_per_epoch > 0,
               "pretrain: window_seconds, epochs and batches_per_epoch must be > 0")
        _check(self.pairs_per_batch >= 2, "pretrain.pairs_per_batch must be >= 2 (the other pairs are the negatives)")
        _check(self.mining in TRIPLET_MININGS, f"pretrain.mining must be one of {TRIPLET_MININGS}")
        _check(self.view_gain_db_max >= 0 and self.view_tilt_db_max >= 0,
               "pretrain.view_gain_db_max and pretrain.view_tilt_db_max must be >= 0")
        _check(self.noise_snr_min_db <= self.noise_snr_max_db and self.mix_gain_min_db <= self.mix_gain_max_db,
               "pretrain: noise SNR and mix gain ranges need min <= max")
        _check(self.learning_rate > 0 and self.margin >= 0 and self.proximity_seconds >= 0
               and self.freq_shift_bands_max >= 0, "pretrain: learning_rate > 0; margin, proximity_seconds and "
                                                   "freq_shift_bands_max >= 0")
        _check(0.0 <= self.labelled_fraction <= 1.0,
               f"pretrain.labelled_fraction must be in [0, 1], got {self.labelled_fraction}")
        _check(self.labelled_fraction == 0 or self.source == "train_bank",
               f"pretrain.labelled_fraction {self.labelled_fraction} needs class labels, which pretrain.source: "
               f"{self.source} (--audio) has none of: use pretrain.source: train_bank, or labelled_fraction: 0")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16
    epochs: int = 30
    learning_rate: float = 1e-3
    # "cosine": decay to 5 % of learning_rate over train.epochs (converges within a fixed
    # budget, e.g. the demo's); "constant": Adam at learning_rate throughout.
    learning_rate_schedule: str = "cosine"
    early_stopping_patience_epochs: int = 8
    # Which epoch becomes model.keras: "best_val_loss" (lowest unweighted strong + weak
    # validation BCE, with early stopping) or "last" (the end of the learning-rate schedule;
    # no early stopping) -- the fair rule when validation losses are non-monotonic, as in
    # weak-only training or a loss-weight sweep.
    select_epoch: str = "best_val_loss"
    seed: int = 0
    jit_compile: bool = False  # XLA on CPU: minutes of compilation, then out of memory (README.md, "Dependency notes")
    fast_dev_run: bool = False  # a couple of batches, one epoch: a smoke run of a recipe
    # "shuffle": each clip once per epoch; "balanced": AudioSet-style, classes round-robin then
    # a clip containing the class (sedweak.training.sampling).
    sampling: str = "shuffle"
    # Per-class BCE weights folded into per-clip sample weights: none | inverse_frequency | sqrt_inverse.
    class_weighting: str = "none"
    # Where to train (sedweak/training/distribute.py): "default" one device; "mirrored" tf.distribute
    # over the visible GPUs (or train.devices); "multiworker" over the hosts of TF_CONFIG;
    # "data_parallel" keras.distribution under JAX. batch_size is the GLOBAL batch, split
    # evenly over the replicas.
    strategy: str = "default"
    devices: tuple[str, ...] = ()  # e.g. ["/gpu:0", "/gpu:1"]; empty: every visible GPU
    # mixed_float16 on a GPU, mixed_bfloat16 on CPU; input norm and outputs stay float32.
    mixed_precision: bool = False
    mean_teacher: MeanTeacherConfig = field(default_factory=MeanTeacherConfig)
    # A .keras model (e.g. from `sedweak pretrain`) whose layers initialise this run's CRNN
    # wherever a layer of the same name has weights of the same shapes; "": none.
    init_from: str = ""

    def __post_init__(self) -> None:
        _check(self.batch_size > 0 and self.epochs > 0, "train.batch_size and train.epochs must be > 0")
        _check(self.sampling in SAMPLINGS, f"train.sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        _check(self.class_weighting in CLASS_WEIGHTINGS,
               f"train.class_weighting must be one of {CLASS_WEIGHTINGS}, got {self.class_weighting!r}")
        _check(self.learning_rate > 0, "train.learning_rate must be > 0")
        _check(self.select_epoch in ("best_val_loss", "last"), "train.select_epoch must be 'best_val_loss' or 'last'")
        _check(self.learning_rate_schedule in ("cosine", "constant"),
               "train.learning_rate_schedule must be 'cosine' or 'constant'")
        _check(self.strategy in STRATEGIES, f"train.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        _check(not self.mean_teacher.enabled or self.strategy == "default",
               f"train.mean_teacher trains on one device (strategy: default), not {self.strategy!r}: "
               "the teacher's EMA update is not replicated")


@dataclass(frozen=True)
class PostprocessConfig:
    """Frame probabilities -> events (DESED baseline conventions)."""

    threshold: float = 0.5
    class_thresholds: tuple[tuple[str, float], ...] = ()  # per-class overrides
    median_filter_seconds: float = 0.45
    min_duration_seconds: float = 0.25
    min_gap_seconds: float = 0.15
    # After training, tune one threshold per class on the valid split: "event_f1" or
    # "segment_f1" (F1-optimal on a 0.1-0.9 grid, sedweak.evaluation.thresholds); saved with
    # the model (replacing class_thresholds) and used by evaluate, predict and export. "none": off.
    tune_thresholds: str = "none"

    def __post_init__(self) -> None:
        _check(0.0 < self.threshold < 1.0, "postprocess.threshold must be in (0, 1)")
        _check(self.tune_thresholds in ("none", "event_f1", "segment_f1"),
               f"postprocess.tune_thresholds must be 'none', 'event_f1' or 'segment_f1', got {self.tune_thresholds!r}")
        for name, value in self.class_thresholds:
            _check(0.0 < float(value) < 1.0, f"postprocess.class_thresholds[{name!r}] must be in (0, 1)")

    def thresholds_for(self, classes: Sequence[str]) -> list[float]:
        overrides = dict(self.class_thresholds)
        unknown = set(overrides) - set(classes)
        _check(not unknown, f"postprocess.class_thresholds names unknown classes {sorted(unknown)}")
        return [float(overrides.get(c, self.threshold)) for c in classes]


@dataclass(frozen=True)
class EvalConfig:
    """sed_eval settings (DCASE conventions)."""

    segment_seconds: float = 1.0
    t_collar_seconds: float = 0.2
    percentage_of_length: float = 0.2


@dataclass(frozen=True)
class CacheConfig:
    """How the log-mel cache is built and read (not part of its identity: features are equal)."""

    # Feature worker processes; 0: min(4, cpu_count); 1: in this process. 1 by default: on
    # a 2-core machine 2 workers were slower than 1 (bench/bench_cache.py).
    num_workers: int = 1
    # A split whose features fit in this many MB is loaded into memory; a larger one is
    # streamed from the HDF5 file batch by batch.
    in_memory_max_mb: float = 2048.0
    flush_every_clips: int = 1  # a kill -9 loses the clips in flight and up to this many - 1 finished

    def __post_init__(self) -> None:
        _check(self.num_workers >= 0, "cache.num_workers must be >= 0")
        _check(self.in_memory_max_mb >= 0, "cache.in_memory_max_mb must be >= 0")
        _check(self.flush_every_clips > 0, "cache.flush_every_clips must be > 0")


@dataclass(frozen=True)
class ExportConfig:
    """How ``sedweak export RUN_DIR`` turns the run's model into a .tflite file
    (CLI flags override each key; export/README.md explains the graphs)."""

    mode: str = "float32"  # float32 | float16 | dynamic | int8 | int16x8 (streaming only)
    graph: str = "auto"  # auto (staged for int8, else whole_clip) | whole_clip | staged | streaming
    calibration: str = "train"  # int8: "train" (the run's training split, never eval) or an audio folder
    calibration_clips: int = 64  # at most this many clips, spread evenly
    gru_steps: int = 10  # staged: model frames per GRU call (more: larger file, fewer calls)
    chunk_frames: int = 20  # streaming: feature frames per step (a multiple of the time pooling)
    lookahead_frames: int = 0  # streaming, bidirectional: frames past each chunk the backward GRU reads
    full_integer: bool = False  # int8 inputs and outputs too
    waveform_input: bool = False  # the log-mel front end inside the graph (kept float32)
    check: bool = True  # compare with the Keras model on the check inputs (a smoke run always happens)
    # keep the model's L2-normalised clip embedding in the file (the runtime returns it per file)
    with_embedding: bool = False

    def __post_init__(self) -> None:
        _check(self.mode in EXPORT_MODES, f"export.mode must be one of {EXPORT_MODES}, got {self.mode!r}")
        _check(isinstance(self.with_embedding, bool),
               f"export.with_embedding must be true or false, got {self.with_embedding!r}")
        _check(self.graph in EXPORT_GRAPHS, f"export.graph must be one of {EXPORT_GRAPHS}, got {self.graph!r}")
        _check(self.calibration_clips > 0, "export.calibration_clips must be > 0")
        _check(self.gru_steps > 0, "export.gru_steps must be > 0")
        _check(self.chunk_frames > 0, "export.chunk_frames must be > 0")
        _check(self.lookahead_frames >= 0, "export.lookahead_frames must be >= 0")
        _check(not self.full_integer or self.mode == "int8", "export.full_integer needs export.mode int8")
        _check(not (self.waveform_input and self.full_integer),
               "export.waveform_input keeps the front end float: not with export.full_integer")

    @property
    def resolved_graph(self) -> str:
        """``auto`` -> ``staged`` for int8 (the int8 route), else ``whole_clip``."""
        if self.graph != "auto":
            return self.graph
        return "staged" if self.mode == "int8" else "whole_clip"


@dataclass(frozen=True)
class WaaConfig:
    """``task: waa``: Turpault et al.'s weak-label study (sedweak.embeddings.waa). One run
    trains the embedding CNN E with ``method`` on segments of ``train_segment_seconds`` cut
    from one-event clips, and scores its tagging F1 on the eval clips cut at every
    ``test_segment_seconds``. Epochs, batch size, learning rate, patience and seed come from
    ``train``."""

    method: str = "classifier"  # classifier (E + G end to end) | triplet | prototypical
    train_segment_seconds: float = 1.0  # one segment per clip, holding (part of) its event
    test_segment_seconds: tuple[float, ...] = (0.2, 1.0, 10.0)
    embedding_dim: int = 130
    filters: tuple[int, ...] = (64, 64, 128, 128)  # the paper fixes depth 4, not the widths
    dropout_rate: float = 0.1
    margin: float = 0.5  # triplet loss margin (unit-norm embeddings)
    mining: str = "semihard"  # triplet negatives: random | semihard | hard
    per_class: int = 4  # triplet batches: every class x per_class segments
    episode_points: int = 6  # prototypical: m points per class per episode (all K classes) ...
    episode_support: int = 3  # ... m_s of them support, the rest queries
    batches_per_epoch: int = 40  # triplet batches / prototypical episodes per epoch
    g_epochs: int = 200  # classifier G on frozen embeddings (triplet, prototypical)
    threshold: float = 0.5  # sigmoid decision of the tagger / G for the F-measure

    def __post_init__(self) -> None:
        _check(self.method in WAA_METHODS, f"waa.method must be one of {WAA_METHODS}, got {self.method!r}")
        lengths = (self.train_segment_seconds, *self.test_segment_seconds)
        _check(bool(self.test_segment_seconds) and all(x > 0 for x in lengths),
               "waa: train_segment_seconds and every test_segment_seconds must be > 0")
        _check(len(self.filters) == 4 and all(f > 0 for f in self.filters), "waa.filters: four positive widths")
        _check(self.mining in TRIPLET_MININGS, f"waa.mining must be one of {TRIPLET_MININGS}")
        _check(self.per_class >= 2, "waa.per_class must be >= 2 (a triplet needs a positive)")
        _check(0 < self.episode_support < self.episode_points,
               "waa: need 0 < episode_support < episode_points (queries are the rest)")
        _check(self.embedding_dim > 0 and self.batches_per_epoch > 0 and self.g_epochs > 0,
               "waa: embedding_dim, batches_per_epoch and g_epochs must be > 0")
        _check(0 < self.threshold < 1 and 0 <= self.dropout_rate < 1 and self.margin >= 0,
               "waa: need 0 < threshold < 1, 0 <= dropout_rate < 1, margin >= 0")


@dataclass(frozen=True)
class Config:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    # What ``sedweak train`` / ``sweep`` run: "detection" (the CRNN) or "waa" (the weak-label
    # embedding study of Turpault et al.: the ``waa`` section).
    task: str = "detection"
    waa: WaaConfig = field(default_factory=WaaConfig)

    def __post_init__(self) -> None:
        _check(self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}")
        _check(self.task != "waa" or (self.data.dataset == "synth" and self.data.synth.mode == "waa"
                                      and self.data.label_type == "strong"),
               "task: waa cuts segments around each clip's one event: it needs data.dataset: synth, "
               "data.synth.mode: waa and data.label_type: strong")
        _check(self.task != "waa" or not self.augment.dynamic_mixing,
               "task: waa trains on fixed segments of the synthesized clips: set augment.dynamic_mixing: false")
        _check(not (self.augment.dynamic_mixing and self.data.synth.event_max_seconds > 0),
               "data.synth.event_max_seconds cuts the events of the fixed mixes; dynamic mixing does not: "
               "set augment.dynamic_mixing: false")
        _check(not self.augment.dynamic_mixing or self.data.dataset == "synth",
               f"augment.dynamic_mixing mixes soundscapes from a sound bank: it needs data.dataset: synth, "
               f"not {self.data.dataset!r} (a fixed dataset keeps its cached features)")
        _check(self.task == "waa" or self.model.pooled_bands(self.features.n_mels) >= 1,
               f"model.conv_pool_freq {list(self.model.conv_pool_freq)} pools features.n_mels = "
               f"{self.features.n_mels} mel bands to nothing: pool less, or use more bands")
        unlabelled = (self.data.dataset == "synth" and self.data.synth.num_unlabelled_clips > 0) or \
            (self.data.dataset == "desed" and bool(dict(self.data.reader_options).get("use_unlabelled")))
        _check(not unlabelled or self.train.mean_teacher.enabled,
               "unlabelled clips (data.synth.num_unlabelled_clips, DESED use_unlabelled) are trained on by "
               "the mean teacher only: set train.mean_teacher.enabled: true, or drop them")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


