"""Backend portability: ``sedweak.training.run`` under KERAS_BACKEND=jax (and torch, when
installed) in a subprocess where TensorFlow cannot be imported; its ``.keras`` file then
loads in this (TensorFlow) process and gives the same outputs.

JAX comes with the ``[test]`` extra; torch is optional (the test skips without it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# Outputs are sigmoid probabilities and unit-length embeddings: the same float32 maths in
# two XLA/Eigen kernels differs by rounding only (~1e-7); 1e-5 flags a real difference
# (a layer computed differently, weights not restored) while allowing kernel order.
TOLERANCE = 1e-5


def _backend_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@pytest.mark.parametrize("backend", [
    "jax", "torch"])
def test_training_runs_without_tensorflow_and_the_model_loads_under_it(backend, tmp_path, tiny_recipe):
    import keras

    if not _backend_available(backend):
        pytest.skip(f"{backend} is not installed (pip install -e .[test] brings jax)")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the loading side of this test runs under the TensorFlow backend")
    from sedweak.models.saving import load_model
    from sedweak.config import load_config
    from sedweak.datasets.prepare import prepare_data

    recipe, overrides = tiny_recipe
    workdir = tmp_path / backend
    logmel = np.random.default_rng(0).normal(-40.0, 12.0, size=(2, 400, 64)).astype("float32")
    np.save(tmp_path / "logmel.npy", logmel)
    overrides = overrides + ["train.epochs=1", f"data.root={tmp_path / 'data'}"]
    # Soundscapes and log-mels are made here (librosa is warm in this process); the
    # subprocess finds them cached under data.root and only trains and evaluates.
    prepare_data(load_config(recipe, overrides), workdir, progress=False)
    request = {"recipe": str(recipe), "overrides": overrides, "workdir": str(workdir),
               "logmel": str(tmp_path / "logmel.npy")}
    environment = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, json.dumps(request)], env=environment,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend and not report["tensorflow_imported"]
    assert report["train_steps"] > 0 and report["epochs_run"] == 1

    model, info = load_model(workdir / "model.keras")
    outputs = model.predict_on_batch(logmel)
    there = np.load(workdir / "outputs.npz")
    diffs = {key: float(np.max(np.abs(np.asarray(outputs[key]) - there[key]))) for key in there.files}
    print(f"{backend}: {report['train_steps']} steps, subprocess {time.perf_counter() - started:.1f} s, "
          f"max |TF - {backend}| {diffs}")
    assert set(diffs) == {"strong", "weak", "embedding"}
    assert max(diffs.values()) < TOLERANCE, diffs
    assert info.classes == ("Beep", "Buzz", "Chirp")


# ----------------------------------------------------------------------------- subprocess side


def _train_without_tensorflow(request: dict) -> dict:
    """Run ``sedweak.training.run`` with TensorFlow made unimportable; save outputs on a probe."""
    sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
    import keras

    from sedweak.config import load_config
    from sedweak.training import run

    config = load_config(request["recipe"], request["overrides"])
    result = run(config, request["workdir"], verbose=0)
    outputs = keras.models.load_model(result.model_path).predict_on_batch(np.load(request["logmel"]))
    np.savez(Path(request["workdir"]) / "outputs.npz", **{k: np.asarray(v) for k, v in outputs.items()})
    steps = -(-config.data.synth.num_train_clips // config.train.batch_size) * result.epochs_run
    return {"backend": keras.backend.backend(), "epochs_run": result.epochs_run, "train_steps": steps,
            "tensorflow_imported": sys.modules.get("tensorflow") is not None}


if __name__ == "__main__":
    print(json.dumps(_train_without_tensorflow(json.loads(sys.argv[1]))))
