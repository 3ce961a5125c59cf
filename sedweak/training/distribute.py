"""Where training runs: replicas (tf.distribute / keras.distribution), mixed precision, backends.

``train.strategy`` picks how ``fit`` places the model:

* ``default``      one device, whatever the backend (current behaviour);
* ``mirrored``     TensorFlow ``MirroredStrategy``: one replica per visible GPU (or the devices
                   in ``train.devices``), variables mirrored, gradients all-reduced;
* ``multiworker``  TensorFlow ``MultiWorkerMirroredStrategy`` over the hosts of ``TF_CONFIG``;
* ``data_parallel`` JAX ``keras.distribution.DataParallel`` over the local devices.

``train.batch_size`` is always the GLOBAL batch: each step takes ``batch_size`` clips from
``ClipBatches`` and splits them over the replicas (``batch_size / replicas`` each; Keras
converts the PyDataset to tf.data and calls ``experimental_distribute_dataset``). Losses are
averaged over the global batch, so the learning rate needs no rescaling. BatchNormalization
statistics are per replica (not synchronised).

Building and compiling the model must happen inside :func:`training_scope` (the variables
are created there); Keras' TF trainer remembers the strategy the model was built under.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Iterator, Mapping, Sequence

from sedweak.config import STRATEGIES
from sedweak.errors import UserError

log = logging.getLogger(__name__)

STRATEGY_BACKENDS = {"default": None, "mirrored": "tensorflow", "multiworker": "tensorflow",
                     "data_parallel": "jax"}
# Layers that stay float32 under mixed precision: the input standardisation sees raw dB
# (bfloat16 keeps ~3 significant digits: 0.5 dB steps at -100 dB) and the sigmoid/L2
# outputs feed the losses, the checkpoint selection and the thresholds.
FLOAT32_LAYERS = ("input_norm", "strong", "weak", "embedding_dense", "embedding")


class DistributeError(UserError, ValueError):
    """A strategy that cannot run here: wrong backend, missing or malformed TF_CONFIG."""


def backend() -> str:
    import keras

    return keras.backend.backend()


def check_strategy(strategy: str, backend_name: str) -> None:
    """Raise :class:`DistributeError` unless ``strategy`` can run under ``backend_name``."""
    if strategy not in STRATEGIES:
        raise DistributeError(f"train.strategy must be one of {STRATEGIES}, got {strategy!r}")
    needed = STRATEGY_BACKENDS[strategy]
    if needed is not None and needed != backend_name:
        route = ("keras.distribution.DataParallel: train.strategy=data_parallel under KERAS_BACKEND=jax"
                 if needed == "tensorflow" else "train.strategy=mirrored under KERAS_BACKEND=tensorflow")
        raise DistributeError(f"train.strategy={strategy!r} needs KERAS_BACKEND={needed}, but Keras runs on "
                              f"{backend_name!r}; use train.strategy=default or {route}")


def read_tf_config(environ: Mapping[str, str] = os.environ) -> dict:
    """Parse and validate ``TF_CONFIG`` for a multi-worker run; returns it as a dict.

    Expected: ``{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker",
    "index": 0}}`` -- the same cluster on every host, each host its own ``task.index``.
    """
    raw = environ.get("TF_CONFIG")
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not raw:
        raise DistributeError(f"train.strategy=multiworker needs the TF_CONFIG environment variable, e.g. {example}")
    try:
        tf_config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({err}); expected e.g. {example}") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    workers = cluster.get("worker") if isinstance(cluster, dict) else None
    if not isinstance(workers, list) or not workers or not all(_is_address(w) for w in workers):
        raise DistributeError(f"TF_CONFIG: cluster.worker must be a non-empty list of 'host:port', got "
                              f"{workers!r}; expected e.g. {example}")
    task = tf_config.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise DistributeError(f"TF_CONFIG: task.type must name a job of the cluster {sorted(cluster)}, "
                              f"got {task!r}")
    index, jobs = task.get("index"), cluster[task["type"]]
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(jobs):
        raise DistributeError(f"TF_CONFIG: task.index must be an integer in [0, {len(jobs)}), got {index!r}")
    return tf_config


def _is_address(value) -> bool:
    host, _, port = str(value).rpartition(":") if isinstance(value, str) else ("", "", "")
    return bool(host) and port.isdigit()


def make_strategy(strategy: str, devices: Sequence[str] = ()):
    """The tf.distribute strategy / keras Distribution for ``strategy``; None for ``default``."""
    check_strategy(strategy, backend())
    if strategy == "default":
        return None
    if strategy == "data_parallel":
        import keras

        return keras.distribution.DataParallel(devices=list(devices) or None)
    import tensorflow as tf

    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy(list(devices) or None)
    read_tf_config()
    if devices:
        raise DistributeError("train.devices is for mirrored/data_parallel; multiworker uses each host's GPUs")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:  # "Collective ops must be configured at program startup"
        raise DistributeError(f"train.strategy=multiworker must be set up before this process runs any "
                              f"TensorFlow op (train in a fresh process): {err}") from None


def replicas(placement) -> int:
    """How many replicas split each global batch (1 for ``default``)."""
    if placement is None:
        return 1
    if hasattr(placement, "num_replicas_in_sync"):
        return int(placement.num_replicas_in_sync)
    return int(placement.device_mesh.shape[0])  # keras.distribution.DataParallel


@contextlib.contextmanager
def training_scope(strategy: str, devices: Sequence[str] = ()) -> Iterator[object]:
    """Build, compile and fit inside this; yields the strategy (None for ``default``)."""
    placement = make_strategy(strategy, devices)
    if placement is None:
        yield None
        return
    log.info("train.strategy=%s: %d replicas", strategy, replicas(placement))
    with placement.scope():
        yield placement


def mixed_policy_name() -> str:
    """``mixed_float16`` when an accelerator is visible to the backend, else ``mixed_bfloat16``."""
    return "mixed_float16" if _has_gpu() else "mixed_bfloat16"


def _has_gpu() -> bool:
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if name == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if name == "torch":
        import torch

        return torch.cuda.is_available()
    return False


@contextlib.contextmanager
def dtype_policy(mixed_precision: bool) -> Iterator[str]:
    """Keras' global dtype policy while building or loading a model, restored afterwards.

    Layers take the global policy when they are constructed, so only models built (or
    deserialised) inside see it; nothing else in the process is affected.
    """
    import keras

    previous = keras.config.dtype_policy()
    name = mixed_policy_name() if mixed_precision else previous.name
    keras.config.set_dtype_policy(name)
    try:
        yield name
    finally:
        keras.config.set_dtype_policy(previous)


def keep_float32(model, names: Sequence[str] = FLOAT32_LAYERS) -> list[str]:
    """Run the named layers of ``model`` in float32 (call before the first training step).

    A layer casts its inputs to its compute dtype, so the log-mel reaches ``input_norm``
    unrounded and the outputs leave as float32. Returns the names found.
    """
    found = []
    for layer in model.layers:
        if layer.name in names and layer.dtype_policy.name != "float32":
            layer.dtype_policy = "float32"
            found.append(layer.name)
    return found


def tensorboard_available() -> bool:
    """Keras' TensorBoard callback writes through ``tensorflow.summary``."""
    try:
        import tensorflow.summary  # noqa: F401
    except ImportError:
        return False
    return True
