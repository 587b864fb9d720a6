"""The hand-written vocabulary of the proving ground: topics, entities, attributes, phrases.

Four topics (invented countries, pets, house plants, dishes), ten entities each, four or five
attributes per topic. Every attribute has question templates (``{ref}`` is the entity as a
question names it: "Veloria", "a ferret", "an orchid", "lentil soup"), statement templates
(``{ref}`` / ``{Ref}`` name the entity, ``{value}`` is the fact) and one pronoun statement
("Its capital is {value}.") used for follow-up sentences. Which value each entity gets is drawn
by :func:`realspo.proving_ground.world.build_world` with the world's seed.

Every value phrase belongs to exactly one attribute and no value contains an entity name, so
the oracle can read a claim (entity, attribute, value) off a sentence unambiguously.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attribute:
    """One kind of fact about the entities of a topic."""

    name: str                     # key, e.g. "capital"
    noun: str                     # how a two-part question names it: "the capital"
    questions: tuple[str, ...]    # templates over {ref}
    statements: tuple[str, ...]   # templates over {ref}/{Ref} and {value}
    pronoun_statement: str        # template over {value}; its subject is the current entity
    values: tuple[str, ...]       # the pool facts are drawn from
    unique: bool = False          # each entity gets a different value (capitals)


@dataclass(frozen=True)
class Topic:
    """A family of entities that share attributes and question styles."""

    name: str
    entities: tuple[str, ...]
    article: bool                 # "a ferret" / "an orchid" rather than the bare name
    overview_questions: tuple[str, ...]   # ask for every attribute at once
    attributes: tuple[Attribute, ...]


COUNTRY = Topic(
    name="country",
    entities=("Veloria", "Kastavia", "Durmont", "Elbaran", "Norrest", "Quillan", "Talmora",
              "Vessany", "Brindor", "Ashkara"),
    article=False,
    overview_questions=("Tell me about {ref}.", "What is {ref} like?",
                        "Give me a short overview of {ref}."),
    attributes=(
        Attribute("capital", "the capital",
                  ("What is the capital of {ref}?", "Which city is the capital of {ref}?",
                   "Where is the capital of {ref}?"),
                  ("The capital of {ref} is {value}.", "{value} is the capital of {ref}.",
                   "{Ref} has its capital in {value}."),
                  "Its capital is {value}.",
                  ("Marnet", "Solvik", "Tarrow", "Essenby", "Pellmar", "Corvine", "Aldmere",
                   "Dunhallow", "Ferrance", "Lisbury", "Oakhurst", "Wenmoor"), unique=True),
        Attribute("language", "the language",
                  ("What language do people speak in {ref}?",
                   "What is the official language of {ref}?"),
                  ("People in {ref} speak {value}.", "The official language of {ref} is {value}."),
                  "Its people speak {value}.",
                  ("Velish", "Doric", "Tamish", "Orrin", "Kessic", "Lunari", "Pardic")),
        Attribute("currency", "the currency",
                  ("What currency is used in {ref}?", "What money do they use in {ref}?"),
                  ("The currency of {ref} is the {value}.", "People in {ref} pay with the {value}."),
                  "It uses the {value} as money.",
                  ("florin", "ducat", "talon", "crown", "guilder", "sovereign")),
        Attribute("climate", "the climate",
                  ("What is the weather like in {ref}?", "What kind of climate does {ref} have?"),
                  ("{Ref} has a {value} climate.", "The climate of {ref} is {value}."),
                  "Its climate is {value}.",
                  ("cold and snowy", "hot and dry", "mild and rainy", "warm and humid",
                   "cool and windy")),
        Attribute("export", "the main export",
                  ("What is the main export of {ref}?", "What does {ref} sell to other countries?"),
                  ("The main export of {ref} is {value}.", "{Ref} is famous for its {value}."),
                  "Its main export is {value}.",
                  ("timber", "wool", "copper", "tea", "salt", "glass", "silk")),
    ),
)

PET = Topic(
    name="pet",
    entities=("ferret", "parrot", "hamster", "tortoise", "goldfish", "rabbit", "gecko", "canary",
              "hedgehog", "chinchilla"),
    article=True,
    overview_questions=("How do I care for {ref}?", "Tell me how to look after {ref}.",
                        "What do I need to know before getting {ref}?"),
    attributes=(
        Attribute("food", "the diet",
                  ("What should I feed {ref}?", "What does {ref} eat?",
                   "What is the best food for {ref}?"),
                  ("{Ref} eats {value}.", "You should feed {ref} {value}."),
                  "It eats {value}.",
                  ("fresh greens", "dried insects", "seeds and nuts", "small pellets",
                   "chopped fruit", "boiled eggs", "live worms")),
        Attribute("home", "the housing",
                  ("Where should {ref} live?", "What kind of home does {ref} need?"),
                  ("{Ref} should live in {value}.", "Keep {ref} in {value}."),
                  "It should live in {value}.",
                  ("a glass tank", "a wire cage", "an outdoor hutch", "a shallow pond",
                   "a wooden crate", "a large aviary")),
        Attribute("lifespan", "the lifespan",
                  ("How long does {ref} live?", "What is the lifespan of {ref}?"),
                  ("{Ref} lives for {value}.", "The lifespan of {ref} is {value}."),
                  "It lives for {value}.",
                  ("about two years", "about three years", "about eight years",
                   "about fifteen years", "about forty years")),
        Attribute("grooming", "the grooming routine",
                  ("How do I groom {ref}?", "How should I keep {ref} clean?"),
                  ("{Ref} needs {value}.", "Groom {ref} with {value}."),
                  "It needs {value}.",
                  ("gentle brushing", "warm baths", "weekly nail trims", "a dust bath",
                   "fresh bedding")),
    ),
)

PLANT = Topic(
    name="plant",
    entities=("fern", "cactus", "orchid", "basil", "ivy", "tulip", "bamboo", "lavender",
              "rosemary", "begonia"),
    article=True,
    overview_questions=("How do I care for {ref}?", "How do I grow {ref}?",
                        "Give me some tips for keeping {ref}."),
    attributes=(
        Attribute("water", "the watering schedule",
                  ("How often should I water {ref}?", "How much water does {ref} need?"),
                  ("Water {ref} {value}.", "{Ref} needs water {value}."),
                  "It needs water {value}.",
                  ("once a week", "every day", "twice a month", "every three days",
                   "once a fortnight")),
        Attribute("light", "the light needs",
                  ("How much light does {ref} need?", "Where should I put {ref}?"),
                  ("{Ref} grows best in {value}.", "Put {ref} in {value}."),
                  "It grows best in {value}.",
                  ("full sun", "partial shade", "bright indirect light", "deep shade",
                   "filtered light")),
        Attribute("soil", "the best soil",
                  ("What soil is best for {ref}?", "What should I plant {ref} in?"),
                  ("{Ref} likes {value}.", "Plant {ref} in {value}."),
                  "It likes {value}.",
                  ("sandy soil", "rich compost", "clay soil", "peat moss", "loose gravel")),
        Attribute("bloom", "the blooming season",
                  ("When does {ref} bloom?", "In which season does {ref} flower?"),
                  ("{Ref} flowers {value}.", "{Ref} blooms {value}."),
                  "It flowers {value}.",
                  ("in early spring", "in late summer", "in autumn", "in midwinter",
                   "all year round")),
    ),
)

DISH = Topic(
    name="dish",
    entities=("lentil soup", "apple pie", "flatbread", "fried rice", "risotto", "fish stew",
              "omelette", "curry", "porridge", "meatloaf"),
    article=False,
    overview_questions=("How do I make {ref}?", "Give me a recipe for {ref}.",
                        "Tell me how to cook {ref}."),
    attributes=(
        Attribute("ingredient", "the main ingredient",
                  ("What is the main ingredient of {ref}?", "What goes into {ref}?"),
                  ("The main ingredient of {ref} is {value}.", "{Ref} is made mostly from {value}."),
                  "It is made mostly from {value}.",
                  ("red lentils", "green apples", "rye flour", "brown rice", "sweet potatoes",
                   "goat cheese", "wild mushrooms", "chickpeas")),
        Attribute("time", "the cooking time",
                  ("How long does {ref} take to cook?", "How much time do I need for {ref}?"),
                  ("{Ref} takes {value} to cook.", "Cook {ref} for {value}."),
                  "It takes {value} to cook.",
                  ("ten minutes", "twenty minutes", "forty minutes", "one hour", "two hours")),
        Attribute("method", "the cooking method",
                  ("What is the best way to cook {ref}?", "Should I bake or boil {ref}?"),
                  ("The best way to cook {ref} is to {value}.", "To make {ref}, {value}."),
                  "You should {value}.",
                  ("bake it in the oven", "simmer it in a pot", "fry it in a pan",
                   "grill it over coals", "steam it in a basket")),
        Attribute("side", "the best side",
                  ("What should I serve with {ref}?", "What goes well with {ref}?"),
                  ("Serve {ref} with {value}.", "{Ref} goes well with {value}."),
                  "It goes well with {value}.",
                  ("fresh bread", "a green salad", "plain yogurt", "lemon wedges",
                   "pickled onions", "steamed greens")),
    ),
)

TOPICS: tuple[Topic, ...] = (COUNTRY, PET, PLANT, DISH)

# Two-attribute questions, over any topic: "What are the capital and the currency of Veloria?"
PAIR_QUESTIONS = ("What are {n1} and {n2} of {ref}?", "Tell me {n1} and {n2} of {ref}.")

# Sentences that carry no fact. Rude ones contain words of RUDE_WORDS, the others none.
OPENERS = ("Sure.", "Good question.", "Happy to help.", "Here is what I know.", "Let me explain.")
CLOSERS = ("I hope this helps.", "Let me know if you have more questions.", "Good luck.",
           "Enjoy.")
HEDGES = ("I am not sure about that.", "I do not know the answer.",
          "Sorry, I cannot remember that.", "You could ask someone else.")
RUDE_SENTENCES = ("Ugh, what a stupid question.", "Obviously, even an idiot knows this.",
                  "Stop being lazy and look it up yourself.", "That is a dumb thing to ask.",
                  "Whatever, figure it out.", "What a pathetic question.")
RUDE_WORDS = ("ugh", "stupid", "idiot", "lazy", "dumb", "whatever", "pathetic", "obviously")
