"""Pipelines that span stages: ``realspo select`` (load -> embed -> score -> select -> write) and
``realspo rounds`` (R rounds of generate -> select -> label -> train), and the model scores
(implicit rewards, reward-model scores) that selection reads."""
