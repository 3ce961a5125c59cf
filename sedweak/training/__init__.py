"""Training: from a config to a trained, evaluated model in a workdir.

Modules, each one concern:

* :mod:`~sedweak.training.trainer` -- ``run`` (prepare data, fit, select the best epoch,
  evaluate, write artifacts), ``fit``, the workdir rules of a second run;
* :mod:`~sedweak.training.targets` -- strong/weak training targets from clip labels;
* :mod:`~sedweak.training.batches` -- seeded batches and augmentation (``keras.utils.PyDataset``);
* :mod:`~sedweak.training.sampling` -- balanced sampling and class weights;
* :mod:`~sedweak.training.checkpoints` -- checkpoints that survive ``kill -9``, exact resume;
* :mod:`~sedweak.training.distribute` -- strategies (mirrored, multi-worker, JAX data parallel);
* :mod:`~sedweak.training.sweep` -- loss-weight sweeps over points x seeds.
"""

from sedweak.training.trainer import (
                                      RunResult,
                                      WorkdirError,
                                      check_workdir,
                                      compile_model,
                                      config_changes,
                                      count_weights,
                                      fit,
                                      model_for_run,
                                      model_info,
                                      run,
                                      seed_everything,
                                      trim_history,
)

__all__ = ["RunResult", "WorkdirError", "check_workdir", "compile_model", "config_changes", "count_weights",
           "fit", "model_for_run", "model_info", "run", "seed_everything", "trim_history"]
