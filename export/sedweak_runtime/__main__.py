"""``python -m sedweak_runtime ...`` (or ``python path/to/sedweak_runtime ...``): the ``sedweak-detect`` CLI."""

import sys
from pathlib import Path

if not __package__:  # run as a folder: import the package from its parent, not its modules as top-level ones
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]

from sedweak_runtime.cli import main  # noqa: E402

sys.exit(main())
