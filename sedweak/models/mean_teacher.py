"""Mean teacher (Tarvainen & Valpola 2017) as the DCASE task 4 baseline trains it.

:class:`MeanTeacher` holds two CRNNs of one architecture: the **student**, trained by the
optimizer, and the **teacher**, an exponential moving average (EMA) of the student's
weights. Each training step:

1. the teacher's weights move towards the student's:
   ``teacher <- a * teacher + (1 - a) * student``, ``a = min(ema_decay, 1 - 1 / (step + 1))``
   (the baseline's warm start), over every float weight, batch-norm statistics included;
2. the student (dropout on) predicts the batch, and the teacher (inference mode) predicts it
   too; the loss is the compiled supervised loss on the student (masked targets -- the
   unlabelled clips -- add nothing) plus ``w(step) * (MSE(strong) + MSE(weak))`` between
   the two, over every clip of the batch, labelled or not;
3. ``w(step) = consistency_weight * exp(-5 (1 - t)^2)``, ``t = min(1, step / rampup_steps)``.

Validation and inference run the teacher, so the checkpoint selected on the validation
losses is the teacher's best; :func:`unwrap` turns the kept network into a plain CRNN.

Why the EMA sits in ``call`` rather than in a callback after the optimizer step: there it is
an update of non-trainable variables, which every backend's trainer carries out inside the
compiled step (TensorFlow as a graph assign, JAX as returned state) -- a callback would
see stale weights under JAX. The price is a lag of one step: the teacher averages the
student's weights from before this step's gradient update, not after it.
"""

from __future__ import annotations

import keras
from keras import ops


def consistency_ramp(step, rampup_steps: float):
    """``exp(-5 (1 - t)^2)``, ``t = clip(step / rampup_steps, 0, 1)``; 1 when ``rampup_steps`` is 0."""
    if rampup_steps <= 0:
        return ops.ones_like(ops.cast(step, "float32"))
    t = ops.clip(ops.cast(step, "float32") / float(rampup_steps), 0.0, 1.0)
    return ops.exp(-5.0 * ops.square(1.0 - t))


def _float_weights(model) -> list:
    return [w for w in model.weights if "float" in str(w.dtype)]


@keras.saving.register_keras_serializable(package="sedweak")
class MeanTeacher(keras.Model):
    """Student + EMA teacher; ``call`` returns the student's outputs when training and the
    teacher's otherwise (both dicts with the CRNN's keys).

    Args:
        student: the CRNN to train (a built functional model).
        teacher: its EMA copy; None: a copy of ``student`` with the same weights.
        ema_decay, consistency_weight, rampup_steps: see the module docstring.
    """

    def __init__(self, student, teacher=None, ema_decay: float = 0.999, consistency_weight: float = 2.0,
                 rampup_steps: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if teacher is None:
            teacher = keras.Model.from_config({**student.get_config(), "name": f"{student.name}_teacher"})
            teacher.set_weights(student.get_weights())
        self.student, self.teacher = student, teacher
        # Set True first: a teacher deserialized with "trainable": False in its layer configs
        # has frozen layers whose sublayers (ConvBlock's conv) are not, and setting False
        # again does not reach them.
        self.teacher.trainable = True
        self.teacher.trainable = False
        pairs = self._pairs()
        if len(_float_weights(teacher)) != len(pairs) or any(t.shape != s.shape for t, s in pairs):
            raise ValueError("MeanTeacher: teacher and student differ in architecture")
        self.ema_decay, self.consistency_weight = float(ema_decay), float(consistency_weight)
        self.rampup_steps = float(rampup_steps)
        self.step = self.add_weight(shape=(), initializer="zeros", trainable=False, name="mean_teacher_step")
        self.consistency_tracker = keras.metrics.Mean(name="consistency")
        self.built = True  # student and teacher come built

    def _pairs(self) -> list:
        """(teacher weight, student weight) pairs, in the models' (shared) weight order."""
        return list(zip(_float_weights(self.teacher), _float_weights(self.student)))

    def call(self, x, training=False):
        if not training:
            return self.teacher(x, training=False)
        self.update_teacher()
        return self.student(x, training=True)

    def update_teacher(self) -> None:
        """One EMA step of the teacher towards the student (and the step counter)."""
        decay = ops.minimum(self.ema_decay, 1.0 - 1.0 / (self.step + 1.0))
        for t, s in self._pairs():
            t.assign(ops.cast(decay, t.dtype) * t + ops.cast(1.0 - decay, t.dtype) * ops.cast(s, t.dtype))
        self.step.assign(self.step + 1.0)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if not training:
            return loss
        target = self.teacher(x, training=False)
        consistency = sum(ops.mean(ops.square(ops.cast(y_pred[k], "float32")
                                              - ops.stop_gradient(ops.cast(target[k], "float32"))))
                          for k in ("strong", "weak"))
        self.consistency_tracker.update_state(consistency)
        weight = self.consistency_weight * consistency_ramp(self.step, self.rampup_steps)
        return loss + ops.cast(weight * consistency, loss.dtype)

    def get_config(self):
        return {**super().get_config(), "student": keras.saving.serialize_keras_object(self.student),
                "teacher": keras.saving.serialize_keras_object(self.teacher), "ema_decay": self.ema_decay,
                "consistency_weight": self.consistency_weight, "rampup_steps": self.rampup_steps}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("student", "teacher"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def wrap(student, config, steps_per_epoch: int) -> MeanTeacher:
    """A :class:`MeanTeacher` around ``student`` with ``config`` (a MeanTeacherConfig)."""
    return MeanTeacher(student, ema_decay=config.ema_decay, consistency_weight=config.consistency_weight,
                       rampup_steps=config.rampup_epochs * steps_per_epoch, name="mean_teacher")


def unwrap(model, keep: str = "teacher"):
    """The plain CRNN inside a :class:`MeanTeacher` (``keep``: "teacher" or "student"), with the
    student's name; any other model is returned as it is."""
    if not isinstance(model, MeanTeacher):
        return model
    inner = model.teacher if keep == "teacher" else model.student
    plain = keras.Model.from_config(model.student.get_config())  # the student's: trainable layers
    plain.set_weights(inner.get_weights())
    return plain
