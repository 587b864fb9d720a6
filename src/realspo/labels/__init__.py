"""Stage 4: labels for selected pairs (`realspo label`).

* :mod:`~realspo.labels.judges`: the judges registry (proving-ground oracle, reward models);
* :mod:`~realspo.labels.outcomes`: outcomes from scores and judges -> preference rows + counts;
* :mod:`~realspo.labels.annotation`: the human round trip (tasks out, answers back);
* :mod:`~realspo.labels.annotator`: the simulated Bradley-Terry annotator and its error rate.
"""
