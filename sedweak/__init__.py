"""sedweak: sound event detection from weakly labelled audio.

Importing the package is cheap: TensorFlow / Keras load only where a model is built.
"""

__version__ = "0.1.0"
