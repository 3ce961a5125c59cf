"""``steady_prefetch``: Keras's PyDataset datasets run without tf.data autotuning inside the
block, unchanged outside it, the batches themselves untouched."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sedweak.training.input_pipeline import steady_prefetch

adapter_module = pytest.importorskip("keras.src.trainers.data_adapters.py_dataset_adapter")
PyDatasetAdapter = adapter_module.PyDatasetAdapter


class Counting(keras.utils.PyDataset):
    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int):
        return np.full((2, 4), index, np.float32), np.full((2, 1), -index, np.float32)


def _batches(dataset) -> list[tuple[float, float]]:
    return [(float(x[0, 0]), float(y[0, 0])) for x, y in dataset]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a tf.data pipeline only")
def test_autotuning_is_off_inside_the_block_and_restored_after():
    original = PyDatasetAdapter.get_tf_dataset
    before = PyDatasetAdapter(Counting()).get_tf_dataset()
    assert before.options().autotune.enabled is not False
    with steady_prefetch():
        inside = PyDatasetAdapter(Counting()).get_tf_dataset()
        assert inside.options().autotune.enabled is False
        assert _batches(inside) == _batches(before) == [(0.0, 0.0), (1.0, -1.0), (2.0, -2.0)]
    assert PyDatasetAdapter.get_tf_dataset is original
    with pytest.raises(RuntimeError), steady_prefetch():  # an error in the fit restores it too
        raise RuntimeError("fit failed")
    assert PyDatasetAdapter.get_tf_dataset is original


def test_a_model_fits_inside_the_block():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with steady_prefetch():
        history = model.fit(Counting(), epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
