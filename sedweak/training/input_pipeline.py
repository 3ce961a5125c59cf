"""How Keras feeds our ``PyDataset`` batches to TensorFlow, made steady on small CPUs.

On the TensorFlow backend Keras wraps a ``PyDataset`` (workers=1) in
``tf.data.Dataset.from_generator(...).prefetch(tf.data.AUTOTUNE)``. On the 2-core
development machine the autotuned prefetch stalls: training the demo recipe, 4 epochs in 10
took 20 s instead of 12 s, for the same 20 s of CPU time, with the second core idle and at
moments the whole process asleep (vmstat). With tf.data autotuning off, every epoch took
12-13 s (2026-12-01, ``sedweak.training.trainer.fit`` on ``recipes/demo.yaml``).

Keras offers no option for the dataset it builds, so :func:`steady_prefetch` wraps its
adapter's ``get_tf_dataset`` for the length of a ``fit`` and switches autotuning off (the
prefetch then keeps one batch ahead). It changes no batch, order or seed: only when the
next batch is computed. Other backends, or a Keras without that adapter, run unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


def _adapter_class():
    """Keras's PyDataset adapter class, or None where this Keras has another layout."""
    try:
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
    except ImportError:
        return None
    return PyDatasetAdapter if callable(getattr(PyDatasetAdapter, "get_tf_dataset", None)) else None


@contextlib.contextmanager
def steady_prefetch() -> Iterator[None]:
    """Within the block, datasets Keras builds from a ``PyDataset`` run without tf.data
    autotuning (TensorFlow backend only)."""
    import keras

    adapter = _adapter_class() if keras.backend.backend() == "tensorflow" else None
    if adapter is None:
        yield
        return
    original = adapter.get_tf_dataset

    def get_tf_dataset(self):
        import tensorflow as tf

        options = tf.data.Options()
        options.autotune.enabled = False
        return original(self).with_options(options)

    adapter.get_tf_dataset = get_tf_dataset
    try:
        yield
    finally:
        adapter.get_tf_dataset = original
