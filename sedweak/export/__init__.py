"""TFLite export of a trained CRNN, or of an embedding-only model (the library side; the device
side is ``sedweak_runtime``).

One module per concern:

==================  =============================================================
``whole_clip``      one ``serve`` signature, the GRU as a WHILE loop (float modes)
``staged``          loop-free ``conv`` / ``gru_i`` / ``head`` signatures: exact, the int8 route
``streaming``       one chunk step with carried states (exact for forward-only models)
``graph``, ``gru``  the model's pieces as loop-free functions, the plain-op GRU maths
``calibration``     int8 calibration clips (a run's training split or a folder)
``convert``         SavedModel -> flatbuffer in a mode, selective quantization, rules
``flatbuffer``      reading .tflite files: ops, tensor types, buffers, hazards
``sidecar``         ``MODEL.tflite.json``: all the runtime needs
``checks``          smoke run on extreme and real inputs, parity with Keras
==================  =============================================================

:func:`export_model` is what ``sedweak export`` runs: it picks the graph, calibrates,
converts, and checks the file before it is put in place (a file that crashes on
silence is refused when it is written, not found on a device). An embedding-only model
(one output, ``embedding``: the patch CNN of a ``task: waa`` run) exports whole-clip with
``with_embedding`` only, its file giving the clip embedding alone.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from sedweak.config import EXPORT_MODES, ExportConfig
from sedweak.export.checks import EMBEDDING_MIN_COSINE, TOLERANCES, ExportCheck, check_inputs, check_tflite
from sedweak.errors import ExportSettingsError
from sedweak.export.convert import ExportError, convert_saved_model
from sedweak.export.flatbuffer import (
    buffer_sizes,
    flatbuffer_tensor_types,
    quantized_ops,
    requantizing_copies,
    tflite_ops,
)
from sedweak.export.graph import embedding_dim, embedding_only, embedding_projection
from sedweak.export.sidecar import EMBEDDING_SIDECAR_FORMAT, SIDECAR_FORMAT, read_sidecar, sidecar_path
from sedweak.export.staged import export_staged
from sedweak.export.streaming import export_streaming
from sedweak.export.whole_clip import export_tflite, run_tflite

__all__ = ["EMBEDDING_MIN_COSINE", "EMBEDDING_SIDECAR_FORMAT", "EXPORT_MODES", "SIDECAR_FORMAT", "TOLERANCES", "ExportCheck", "ExportConfig", "ExportError",
           "buffer_sizes", "check_inputs", "check_tflite", "convert_saved_model", "export_model",
           "export_staged", "export_streaming", "export_tflite", "flatbuffer_tensor_types", "quantized_ops",
           "read_sidecar", "requantizing_copies", "run_tflite", "sidecar_path", "tflite_ops"]


def export_model(model, info, out: str | Path, settings: ExportConfig, run_config: str | Path | None = None,
                 source: str = "", bank_clips: int = 20) -> tuple[Path, ExportCheck]:
    """Convert ``model`` as ``settings`` say, check the file, then write ``out`` and its sidecar.

    ``run_config``: the run's ``config.yaml``, where ``settings.calibration == "train"``
    finds its training split. The file is written under a temporary name, smoke-run on
    :func:`check_inputs` (and compared with ``model`` when ``settings.check``), and only
    then renamed to ``out``: a refused file leaves nothing behind. ``settings.with_embedding``:
    the file keeps the model's clip embedding (checked for a unit norm and, with ``check``,
    for its cosine similarity with Keras, :data:`EMBEDDING_MIN_COSINE`).

    An embedding-only model (:func:`embedding_only`) needs ``with_embedding`` and the whole-clip
    graph (``auto`` picks it, in every mode, int8 included: it has no loop); its file outputs
    the embedding alone. The returned report's ``graph`` is the graph written.

    Raises:
        ExportError: the conversion failed or the file failed a check.
        ValueError: settings that do not go together, ``with_embedding`` for a model
            without an embedding output, or an embedding-only model without it or in a staged
            or streaming graph (:class:`ExportSettingsError`, naming it).
    """
    out = Path(out)
    name = source or f"model {model.name!r}"
    graph = _embedding_only_graph(settings, name) if embedding_only(model) else settings.resolved_graph
    if settings.mode == "int16x8" and graph != "streaming":
        raise ExportSettingsError("--mode int16x8 is offered for --streaming files only (the converter's int16 staged GRU "
                                  "stages come out wrong: export/README.md)")
    if settings.mode in ("int8", "int16x8") and graph == "whole_clip" and not embedding_only(model):
        raise ExportSettingsError(f"--mode {settings.mode} needs a loop-free graph: staged (the default for int8) or "
                                  "streaming; the whole-clip GRU is a WHILE loop the int8 calibrator cannot run")
    if graph != "streaming" and settings.lookahead_frames:
        raise ExportSettingsError("--lookahead-frames applies to --streaming exports")
    if graph == "streaming" and settings.waveform_input:
        raise ExportSettingsError("--streaming takes log-mel frames (the runtime's streaming front end makes them)")
    if settings.with_embedding:          # refused before any calibration is spent
        check_head = embedding_dim if graph == "whole_clip" else embedding_projection
        check_head(model, name)
    clips = _calibration(settings, info, run_config) if settings.mode in ("int8", "int16x8") else None
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    try:
        if graph == "staged":
            export_staged(model, info, partial, settings.mode, settings.gru_steps, clips, settings.full_integer,
                          source, settings.waveform_input, settings.with_embedding)
        elif graph == "streaming":
            export_streaming(model, info, partial, settings.chunk_frames, settings.mode, clips,
                             settings.full_integer, source, settings.lookahead_frames, settings.with_embedding)
        else:
            if settings.full_integer:
                raise ExportSettingsError("--full-integer applies to int8 exports")
            export_tflite(model, info, partial, settings.mode, settings.waveform_input, source,
                          settings.with_embedding, clips)
        report = check_tflite(partial, info, model if settings.check else None, bank_clips)
        os.replace(sidecar_path(partial), sidecar_path(out))
        os.replace(partial, out)
    except ExportError as err:
        raise ExportError(f"{str(err).replace(str(partial), str(out))}; {out} not written") from None
    finally:
        for leftover in (partial, sidecar_path(partial)):
            leftover.unlink(missing_ok=True)
    return out, dataclasses.replace(report, path=str(out), graph=graph)      # the report names the final file


def _embedding_only_graph(settings: ExportConfig, name: str) -> str:
    """The graph of an embedding-only model's file (``whole_clip``), or ExportSettingsError
    naming the model for settings it cannot take."""
    if not settings.with_embedding:
        raise ExportSettingsError(f"{name}: this model has only an embedding output: pass --with-embedding (the "
                                  "file then gives the clip embedding alone)")
    if settings.graph in ("staged", "streaming"):
        raise ExportSettingsError(f"{name}: an embedding-only model (no strong / weak outputs, no GRU) exports as one "
                                  f"whole-clip graph, in every mode int8 included: drop --{settings.graph} "
                                  "(or pass --whole-clip)")
    if settings.mode == "int16x8":
        raise ExportSettingsError(f"{name}: --mode int16x8 is not offered for an embedding-only model: use int8 or "
                                  "a float mode")
    if settings.full_integer:
        raise ExportSettingsError(f"{name}: an embedding-only file takes and gives float (int8 inside): drop "
                                  "--full-integer")
    return "whole_clip"


def _calibration(settings: ExportConfig, info, run_config):
    """Calibration clips for an int8 / int16x8 export: log-mels, or waveforms for a
    waveform-input file."""
    from sedweak.export.calibration import calibration_logmels, calibration_waveforms

    if settings.calibration == "train":
        if run_config is None or not Path(run_config).is_file():
            raise FileNotFoundError(f"--mode {settings.mode} calibrates on the run's training split, but no run "
                                    f"config.yaml was found ({run_config}); pass --calibration AUDIO_DIR or a "
                                    "config.yaml")
        source = Path(run_config)
    else:
        source = Path(settings.calibration)
    read = calibration_waveforms if settings.waveform_input else calibration_logmels
    return read(source, info, settings.calibration_clips)
