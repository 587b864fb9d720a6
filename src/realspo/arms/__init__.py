"""Arms on the proving ground: what the demo, the grid and the leaderboard share.

An *arm* is one way of choosing and labelling pairs (a selection strategy, a control) trained
with one loss. This package holds the plan of an experiment (:mod:`realspo.arms.plan`), the
candidate pool of a seed (:mod:`realspo.arms.candidate_pool`), the controls and knobs, training
one arm and evaluating it against the oracle (:mod:`realspo.arms.train_and_evaluate`,
:mod:`realspo.arms.arm_outcomes`) and the numbers computed from the results
(:mod:`realspo.arms.analysis`). The experiments themselves live in :mod:`realspo.demo`,
:mod:`realspo.grid` and :mod:`realspo.leaderboard`.
"""
