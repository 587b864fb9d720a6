"""The offline proving ground: a synthetic assistant task, its oracle, and a small SFT model.

* :mod:`~realspo.proving_ground.topics`: the hand-written vocabulary (topics, entities,
  attributes, question and statement templates, stock sentences).
* :mod:`~realspo.proving_ground.world`: facts, train/test prompts and the mixed-quality
  response corpus, all a deterministic function of :class:`WorldConfig`.
* :mod:`~realspo.proving_ground.oracle`: the transparent scoring program (formula in its
  docstring).
* :mod:`~realspo.proving_ground.sft`: the SFT model, built on first use and cached.
"""

from realspo.proving_ground.oracle import Judgement, Oracle, Question
from realspo.proving_ground.sft import (
    SFTConfig,
    default_cache_dir,
    get_sft_model,
)
from realspo.proving_ground.world import (
    World,
    WorldConfig,
    build_world,
    format_prompt,
    oracle_reward_batch,
)

__all__ = [
    "Judgement", "Oracle", "Question", "SFTConfig", "World", "WorldConfig", "build_world",
    "default_cache_dir", "format_prompt", "get_sft_model", "oracle_reward_batch",
]
