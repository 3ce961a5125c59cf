"""Shared by the bench scripts: library versions and writing the JSON record."""

from __future__ import annotations

import json
from pathlib import Path


def versions() -> dict:
    """Versions of the libraries whose speed the benches measure."""
    import keras
    import librosa
    import numpy as np
    import tensorflow as tf

    return {"keras": keras.__version__, "backend": keras.backend.backend(), "tensorflow": tf.__version__,
            "librosa": librosa.__version__, "numpy": np.__version__}


def write_record(path: Path, record: dict) -> None:
    """Write the bench's JSON record and say where it went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {path}")
