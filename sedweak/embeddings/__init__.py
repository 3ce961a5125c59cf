"""Embeddings: losses (keras.ops) and their numpy / scikit-learn quality measures."""
