from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="sedweak",
    version="0.1.0",
    description="Sound event detection from weakly labelled audio: CRNN with strong and weak outputs, "
    "DCASE metrics, loss sweeps, saliency and TFLite export.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8")
    if Path(__file__).with_name("README.md").exists()
    else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["sedweak", "sedweak.*"]) + ["sedweak.recipes", "sedweak_runtime"],
    # recipes/ is the package's recipe folder (one source, browsed at the top level);
    # the device runtime is also its own distribution (export/pyproject.toml).
    package_dir={"sedweak.recipes": "recipes", "sedweak_runtime": "export/sedweak_runtime"},
    package_data={"sedweak": ["assets/soundbank/*.csv", "assets/soundbank/*.md", "assets/soundbank/*/*/*.flac"],
                  "sedweak.recipes": ["*.yaml", "*.md"]},
    install_requires=[
        # CPU wheel: no CUDA libraries to download; the same API as `tensorflow`.
        # On a GPU box install `tensorflow[and-cuda]` instead (see README).
        "tensorflow-cpu==2.21.*",
        "keras>=3.15,<4",
        "tensorboard>=2.20",  # Keras' TensorBoard callback needs it; tensorflow-cpu 2.21 does not pull it
        "numpy>=1.26",
        "librosa>=0.10",
        "soxr>=0.3",  # streaming resampling (sedweak.audio); librosa pulls it in too
        "soundfile>=0.12",
        "sed_eval>=0.2.1",
        # PSDS and intersection F1 (sedweak.evaluation.scores). Only an sdist on PyPI: pip
        # builds its Cython kernel (needs a C compiler). 0.0.4's kernel fails on pandas 3
        # ("buffer source array is read-only"), hence the pandas pin.
        "sed_scores_eval==0.0.4",
        "pandas>=2.2,<3",
        "h5py>=3.10",
        "click>=8.1",
        "pyyaml>=6",
        "matplotlib>=3.8",
        "scikit-learn>=1.4",
        # waveform augmentation of bank events before dynamic mixing (sedweak.training.dynamic_mix)
        "audiomentations>=0.43,<0.44",
        # `sedweak export` checks every .tflite it writes with the same interpreter the
        # device runtime uses (sedweak_runtime, shipped in this distribution too).
        "ai-edge-litert>=2.3",
        # sed_eval's dcase_util imports pkg_resources, which newer setuptools no longer ship.
        "setuptools>=65,<80",
        "faiss-cpu>=1.8",  # ANN for `sedweak search` over millions of windows; binary wheels (hnswlib: sdist only)
    ],
    extras_require={
        # jax: tests/test_backends.py trains under KERAS_BACKEND=jax (jaxlib CPU wheel, ~350 MB
        # installed, ~20 s to install). torch is optional: its test skips without it.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "jax[cpu]==0.10.2"],  # xdist: pytest.ini runs files in parallel
        # the device side alone is `pip install ./export` (sedweak-runtime); this package
        # already ships the same sedweak_runtime module and its sedweak-detect command.
        "edge": ["ai-edge-litert>=2.3", "numpy", "soundfile"],
    },
    entry_points={"console_scripts": ["sedweak=sedweak.cli:main", "sedweak-detect=sedweak_runtime.cli:main"]},
)
