"""The proving ground's world: facts, prompts, and a corpus of mixed-quality responses.

A world is a deterministic function of :class:`WorldConfig`. From the hand-written vocabulary
in :mod:`realspo.proving_ground.topics` it

1. draws the facts: one value per (entity, attribute) from the attribute's pool (seeded);
2. enumerates every question the templates can form: one attribute ("What is the capital of
   Veloria?"), two attributes ("What are the diet and the lifespan of a ferret?") or all of
   them ("How do I care for an orchid?"), about 1,000 in all, and splits a seeded shuffle of
   them into disjoint test and train prompts (HH style: ``"\\n\\nHuman: {q}\\n\\nAssistant:"``);
3. writes, for each train prompt, ``responses_per_prompt`` responses of mixed quality by
   template (:meth:`World.responses_for`): correct and relevant, partially correct, wrong
   facts, off-topic facts, repetitive, rude, hedging, short and long. Responses start with a
   space, as HH-RLHF responses do. The SFT model learns this mixture, so its samples for one
   prompt differ in content and in oracle reward;
4. with ``coupling`` RHO > 0 (``realspo demo --world-coupling``), writes each low-quality
   response, with probability RHO, in its own register (:mod:`realspo.proving_ground.registers`),
   from a random stream of its own: the content of every response is the same for every RHO,
   and RHO = 0 is the default world, text for text.

Two other worlds (``kind``, ``realspo demo --world``) are positive controls, each built so
that one method's premise holds:

* ``premise`` (REAL's): the same facts, prompts and kinds of response as the default world,
  but every response opens with the rungs of a quality ladder, more the worse its content
  (:mod:`realspo.proving_ground.ladder`); the oracle ignores the ladder.
* ``omissions`` (SPO's): errors are omissions, not false claims. Only questions that ask for
  two or more facts are used, and every corpus response states true, asked facts, all of them
  (``complete``) or some (``partial``), with no filler, off-topic fact, rudeness or repetition:
  removing a response's key content removes asked facts and lowers its oracle reward, which is
  what SPO's degree task teaches. (The SFT model can still make up a wrong value; the oracle
  charges it as in every world.)

Nothing here looks at embeddings or similarities: which pairs annotators get wrong is left for
the experiment to measure.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from realspo.errors import ConfigError
from realspo.proving_ground.ladder import with_ladder
from realspo.proving_ground.oracle import Oracle, Question
from realspo.proving_ground.registers import add_registers
from realspo.proving_ground.topics import (
    CLOSERS,
    HEDGES,
    OPENERS,
    PAIR_QUESTIONS,
    RUDE_SENTENCES,
    TOPICS,
    Attribute,
    Topic,
)

HUMAN, ASSISTANT = "\n\nHuman: ", "\n\nAssistant:"

# Kinds of corpus responses and how often each is written (weights, normalised by the sampler).
RESPONSE_KINDS: dict[str, float] = {
    "correct": 0.26, "partial": 0.10, "wrong": 0.16, "off_topic": 0.14, "repetitive": 0.10,
    "rude": 0.09, "hedge": 0.05, "short": 0.05, "long": 0.05,
}
# The omissions world's kinds: every asked fact, or a non-empty strict subset of them.
OMISSION_KINDS: dict[str, float] = {"complete": 0.4, "partial_omission": 0.6}
WORLD_KINDS = ("default", "premise", "omissions")


@dataclass(frozen=True)
class WorldConfig:
    """What fixes a world: its seed, the split sizes, the size of the SFT corpus, how
    strongly quality shows on the surface (``coupling``, 0 to 1; module docstring, step 4)
    and which world it is (``kind``: ``default``, ``premise`` or ``omissions``)."""

    seed: int = 0
    n_train_prompts: int = 600
    n_test_prompts: int = 200
    responses_per_prompt: int = 8
    coupling: float = 0.0
    kind: str = "default"

    def validate(self, pool_size: int) -> None:
        if self.kind not in WORLD_KINDS:
            raise ConfigError(f"proving ground: world must be one of {', '.join(WORLD_KINDS)}, "
                              f"got {self.kind!r}")
        if not 0.0 <= self.coupling <= 1.0:
            raise ConfigError(f"proving ground: coupling must be in [0, 1], got {self.coupling}")
        if self.n_train_prompts < 1 or self.n_test_prompts < 1:
            raise ConfigError("proving ground: n_train_prompts and n_test_prompts must be >= 1")
        if self.n_train_prompts + self.n_test_prompts > pool_size:
            raise ConfigError(
                f"proving ground: n_train_prompts + n_test_prompts = "
                f"{self.n_train_prompts + self.n_test_prompts} exceeds the {pool_size} distinct "
                f"questions the world can ask")
        if self.responses_per_prompt < 1:
            raise ConfigError("proving ground: responses_per_prompt must be >= 1")


def entity_ref(topic: Topic, entity: str) -> str:
    """How sentences name an entity: "Veloria", "a ferret", "an orchid"."""
    if not topic.article:
        return entity
    return ("an " if entity[0] in "aeiou" else "a ") + entity


def format_prompt(question: str) -> str:
    """The HH-style prompt text for one question."""
    return f"{HUMAN}{question}{ASSISTANT}"


@dataclass
class World:
    """Facts, the train/test prompts, the oracle that scores responses, and the SFT corpus."""

    config: WorldConfig
    facts: dict[tuple[str, str], str]          # (entity, attribute) -> value
    questions: dict[str, Question]             # prompt text -> what it asks
    train_prompts: list[str]
    test_prompts: list[str]
    oracle: Oracle
    topic_of: dict[str, Topic] = field(repr=False)

    @functools.cached_property
    def sft_corpus(self) -> list[tuple[str, str]]:
        """(prompt, response) pairs: ``responses_per_prompt`` per train prompt, seeded."""
        n = self.config.responses_per_prompt
        return [(p, r) for i, p in enumerate(self.train_prompts)
                for r in self.responses_for(p, n, seed=self.config.seed * 1_000_003 + i)]

    # -- writing responses ------------------------------------------------------------------

    def responses_for(self, prompt: str, n: int, seed: int = 0) -> list[str]:
        """``n`` mixed-quality responses to ``prompt``, kinds drawn from RESPONSE_KINDS
        (OMISSION_KINDS in the omissions world)."""
        rng = random.Random(seed)
        table = OMISSION_KINDS if self.config.kind == "omissions" else RESPONSE_KINDS
        kinds, weights = list(table), list(table.values())
        drawn = rng.choices(kinds, weights, k=n)
        texts = [self.write_response(prompt, k, rng) for k in drawn]
        if self.config.kind == "premise":  # the ladder reads the content's score
            texts = [with_ladder(t, self.oracle.score(prompt, t)) for t in texts]
        if self.config.coupling > 0:
            texts = add_registers(texts, drawn, self.config.coupling, random.Random(f"register-{seed}"))
        return texts

    def reference_response(self, prompt: str, seed: int = 0) -> str:
        """A correct, relevant, polite answer (the best kind the corpus holds)."""
        kind = "complete" if self.config.kind == "omissions" else "correct"
        return self.write_response(prompt, kind, random.Random(seed))

    def write_response(self, prompt: str, kind: str, rng: random.Random) -> str:
        """One response of the given kind (a key of RESPONSE_KINDS)."""
        q = self.oracle.question(prompt)  # InputError for a prompt outside the world
        asked = list(q.attributes)
        rng.shuffle(asked)
        correct = [(q.entity, a, self.facts[q.entity, a]) for a in asked]
        if kind == "correct":
            claims = correct
        elif kind in ("complete", "partial_omission"):  # asked facts only: nothing false or extra
            keep = rng.randint(1, len(correct) - 1) if kind != "complete" and len(correct) > 1 \
                else len(correct)
            return self._render(correct[:keep], q.entity, rng, filler=False)
        elif kind == "partial":
            keep = rng.randint(1, len(correct) - 1) if len(correct) > 1 else 1
            # one or more asked facts right, plus one wrong one (asked or another attribute)
            claims = correct[:keep] + [self._wrong_claim(q.entity, rng, asked[keep:] or None)]
        elif kind == "wrong":
            claims = [self._wrong_claim(q.entity, rng, [a]) for a in asked[: rng.randint(1, 2)]]
        elif kind == "off_topic":
            claims = [self._off_topic_claim(q, rng) for _ in range(rng.randint(1, 2))]
        elif kind == "repetitive":
            base = correct[0] if rng.random() < 0.5 else self._wrong_claim(q.entity, rng, asked[:1])
            sentence = self._render([base], q.entity, rng, filler=False, pronouns=False)
            return sentence * rng.randint(2, 4)
        elif kind == "rude":
            claims = correct if rng.random() < 0.5 else [self._wrong_claim(q.entity, rng, asked[:1])]
            text = self._render(claims, q.entity, rng, filler=False)
            rude = rng.choice(RUDE_SENTENCES)
            return f" {rude}{text}" if rng.random() < 0.5 else f"{text} {rude}"
        elif kind == "hedge":
            return " " + rng.choice(HEDGES)
        elif kind == "short":
            value = self.facts[q.entity, asked[0]]
            return f" {value[0].upper()}{value[1:]}."
        elif kind == "long":
            claims = correct + [self._off_topic_claim(q, rng) for _ in range(rng.randint(1, 2))]
            return self._render(claims, q.entity, rng, filler=True, force_filler=True)
        else:
            raise ValueError(f"unknown response kind {kind!r}")
        return self._render(claims, q.entity, rng)

    def _wrong_claim(self, entity: str, rng: random.Random,
                     attributes: list[str] | None = None) -> tuple[str, str, str]:
        """A false statement about ``entity``: a pool value other than the true one."""
        topic = self.topic_of[entity]
        name = rng.choice(attributes or [a.name for a in topic.attributes])
        attr = _attribute(topic, name)
        value = rng.choice([v for v in attr.values if v != self.facts[entity, name]])
        return entity, name, value

    def _off_topic_claim(self, q: Question, rng: random.Random) -> tuple[str, str, str]:
        """A true fact that was not asked: another attribute, or another entity."""
        topic = self.topic_of[q.entity]
        others = [a.name for a in topic.attributes if a.name not in q.attributes]
        if others and rng.random() < 0.4:
            name = rng.choice(others)
            return q.entity, name, self.facts[q.entity, name]
        pool = topic.entities if rng.random() < 0.7 else [e for t in TOPICS for e in t.entities]
        entity = rng.choice([e for e in pool if e != q.entity])
        name = rng.choice([a.name for a in self.topic_of[entity].attributes])
        return entity, name, self.facts[entity, name]

    def _render(self, claims: list[tuple[str, str, str]], asked_entity: str, rng: random.Random,
                *, filler: bool = True, force_filler: bool = False,
                pronouns: bool = True) -> str:
        """Sentences for the claims, each naming its entity unless the subject is unchanged."""
        sentences = []
        if filler and (force_filler or rng.random() < 0.3):
            sentences.append(rng.choice(OPENERS))
        subject = asked_entity      # the oracle's reading before any entity is named
        for i, (entity, name, value) in enumerate(claims):
            topic = self.topic_of[entity]
            attr = _attribute(topic, name)
            # a pronoun only where the oracle resolves it to the right entity
            if pronouns and entity == subject and (i > 0 or rng.random() < 0.2) \
                    and rng.random() < 0.5:
                sentences.append(attr.pronoun_statement.format(value=value))
            else:
                ref = entity_ref(topic, entity)
                template = rng.choice(attr.statements)
                sentences.append(template.format(ref=ref, Ref=ref[0].upper() + ref[1:],
                                                 value=value))
            subject = entity
        if filler and (force_filler or rng.random() < 0.3):
            sentences.append(rng.choice(CLOSERS))
        return "".join(" " + s[0].upper() + s[1:] for s in sentences)


def _attribute(topic: Topic, name: str) -> Attribute:
    return next(a for a in topic.attributes if a.name == name)


def all_questions() -> list[Question]:
    """Every question the templates can form, in a fixed order."""
    out: list[Question] = []
    for topic in TOPICS:
        for entity in topic.entities:
            ref = entity_ref(topic, entity)
            for attr in topic.attributes:
                out += [Question(t.format(ref=ref), entity, (attr.name,)) for t in attr.questions]
            for i, a1 in enumerate(topic.attributes):
                for a2 in topic.attributes[i + 1:]:
                    out += [Question(t.format(n1=a1.noun, n2=a2.noun, ref=ref), entity,
                                     (a1.name, a2.name)) for t in PAIR_QUESTIONS]
            every = tuple(a.name for a in topic.attributes)
            out += [Question(t.format(ref=ref), entity, every) for t in topic.overview_questions]
    return out


def draw_facts(seed: int) -> dict[tuple[str, str], str]:
    """One value per (entity, attribute); ``unique`` attributes never repeat within a topic."""
    rng = random.Random(f"facts-{seed}")
    facts: dict[tuple[str, str], str] = {}
    for topic in TOPICS:
        for attr in topic.attributes:
            if attr.unique:
                values = rng.sample(attr.values, len(topic.entities))
            else:
                values = [rng.choice(attr.values) for _ in topic.entities]
            facts.update({(e, attr.name): v for e, v in zip(topic.entities, values, strict=True)})
    return facts


def question_pool_size(kind: str = "default") -> int:
    """How many distinct questions a world of ``kind`` can ask (train + test prompts at most)."""
    return sum(kind != "omissions" or len(q.attributes) > 1 for q in all_questions())


@functools.lru_cache(maxsize=8)
def build_world(cfg: WorldConfig | None = None) -> World:
    """The world for ``cfg`` (default :class:`WorldConfig`); the same config gives the same world."""
    cfg = cfg or WorldConfig()
    questions = all_questions()
    if cfg.kind == "omissions":  # an omission needs a question with two or more asked facts
        questions = [q for q in questions if len(q.attributes) > 1]
    cfg.validate(len(questions))
    order = list(range(len(questions)))
    random.Random(f"split-{cfg.seed}").shuffle(order)
    test = [format_prompt(questions[i].text) for i in order[: cfg.n_test_prompts]]
    train = [format_prompt(questions[i].text)
             for i in order[cfg.n_test_prompts: cfg.n_test_prompts + cfg.n_train_prompts]]
    facts = draw_facts(cfg.seed)
    topic_of = {e: t for t in TOPICS for e in t.entities}
    by_prompt = {format_prompt(q.text): q for q in questions}
    oracle = Oracle(facts=facts, questions={q.text: q for q in questions}, topic_of=topic_of,
                    registers=cfg.coupling > 0, ladder=cfg.kind == "premise")
    return World(config=cfg, facts=facts, questions=by_prompt, train_prompts=train,
                 test_prompts=test, oracle=oracle, topic_of=topic_of)


def oracle_reward_batch(prompts: Sequence[str], responses: Sequence[str],
                        oracle: Oracle | None = None) -> list[float]:
    """Oracle rewards of responses to prompts; ``oracle`` defaults to the default world's."""
    if oracle is None:
        oracle = build_world().oracle
    return oracle.score_batch(prompts, responses)
