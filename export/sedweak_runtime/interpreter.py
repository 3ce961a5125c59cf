"""Opening a LiteRT interpreter without its C++ log lines on the user's terminal.

The TFLite runtime and converter write straight to file descriptor 2 from C++ ("INFO:
Created TensorFlow Lite XNNPACK delegate for CPU.", the quantizer's "fully_quantize: 0,
..."), past Python's ``sys.stderr`` and any logging setup. :func:`native_stderr_to_log`
redirects the descriptor for the length of a call and hands the text to a logger at
INFO (``sedweak -v`` shows it); when the call raises, the text is written back to stderr, since
it may say why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def native_stderr_to_log(logger: logging.Logger = log) -> Iterator[None]:
    """Capture what native code writes to fd 2 inside the block (not thread-safe: fd 2 is
    the process's)."""
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace").strip()
            if text and failed:
                sys.stderr.write(text + "\n")
            elif text:
                logger.info("native log lines:\n%s", text)


def open_interpreter(model_path: str | Path | None = None, model_content: bytes | None = None,
                     num_threads: int = 1):
    """``ai_edge_litert.interpreter.Interpreter`` for a file or a flatbuffer, quietly."""
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_to_log():
        if model_content is not None:
            interpreter = Interpreter(model_content=model_content, num_threads=num_threads)
        else:
            interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        interpreter.allocate_tensors()  # applies the (lazy) XNNPACK delegate, which logs
    return interpreter
