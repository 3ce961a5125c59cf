"""The errors a user can fix: a bad recipe, label, audio file, model file, dataset, output
path or export setting. Each is a :class:`UserError`; the CLI prints its message in one line
(``-v`` adds the traceback). Any other exception is a bug in sedweak and prints its traceback.

The concrete types live with the code that raises them (``ConfigError`` in
:mod:`sedweak.config`, ``AudioError`` in :mod:`sedweak.audio`, ``LabelError`` in
:mod:`sedweak.labels`, ``ModelFileError`` in :mod:`sedweak.models.saving`, ``WorkdirError``
in :mod:`sedweak.training`, ...), the shared ones here; each also derives
from the builtin it used to be (``ValueError``, ``RuntimeError``, ``FileNotFoundError``), so
``except ValueError`` around library calls keeps working.
"""


class UserError(Exception):
    """Something the user gave cannot be used as it is; the message says what and where."""


class DataError(UserError, ValueError):
    """A dataset, split or set of files that cannot be used (no usable clip, no positive clip...)."""


class OutputPathError(UserError, ValueError):
    """An output path that cannot be written (a folder, a file in the way, no permission)."""


class ExportError(UserError, RuntimeError):
    """A conversion that failed, or produced a file that fails its checks."""


class ExportSettingsError(ExportError, ValueError):
    """Export settings that do not fit the model or each other (mode, graph, calibration...)."""


class TrainingDiverged(UserError, RuntimeError):
    """The monitored loss became NaN or infinite: lower the learning rate, check the data."""
