"""Everyday uses of audio embeddings (Pons & Favory's lab): organise a collection of files.

* :mod:`sedweak.collections.labels`: file -> class tables (a ``file,label[,fold]`` CSV, an
  UrbanSound8K metadata CSV, or class-named subfolders), matched to embedded files.
* :mod:`sedweak.collections.mfcc_stats`: the MFCC-statistics baseline vectors.
* :mod:`sedweak.collections.vectors`: one vector per file from an embeddings ``.h5``, a
  ``.keras`` model with an ``embedding`` output, or MFCC statistics.
* :mod:`sedweak.collections.transfer`: scikit-learn classifiers on those vectors, learning
  curves over the number of labelled examples per class (``sedweak transfer``);
  :mod:`sedweak.collections.transfer_report` their tables (mean ± 95 % CI) and plot.
* :mod:`sedweak.collections.cluster`: k-means / agglomerative clustering with k chosen by
  silhouette, representatives per cluster (``sedweak cluster``).
* :mod:`sedweak.collections.index`: an incrementally updated, resumable index of per-window
  embeddings of a sound folder (``sedweak index``).
  :mod:`sedweak.collections.index_store` its on-disk format (manifest, shards, lock).
* :mod:`sedweak.collections.search`: query-by-example over that index, exact (numpy) or
  approximate (faiss IVF / HNSW) cosine search (``sedweak search``).

Nothing is imported here: each module pulls in scikit-learn or TensorFlow only where used.
"""
