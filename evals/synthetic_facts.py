"""The closed vocabulary of the synthetic conversations: attributes, their values and the sentences around them.

Kept small on purpose: the adapter being trained is an 8×8 state per layer on a 135M backbone, trained for minutes
on CPU. Every value is one SmolLM2 token when it follows a space (a test checks this), every attribute has several
phrasings so the adapter must learn the fact rather than one string, and no filler sentence mentions a value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attribute:
    """One kind of personal fact. Templates use {value}, {a} (the indefinite article for value) and {name}."""

    key: str
    values: tuple[str, ...]
    statements: tuple[str, ...]  # first mention
    changes: tuple[str, ...]  # a later mention that replaces the value
    question: str  # third person, LoCoMo style: asked about speaker A by name
    question_self: str  # first person: speaker A asks the assistant about themself
    answer_sentence: str  # a full-sentence answer, so the value follows a space and stays one token
    answer_sentence_self: str  # the same, addressed to speaker A

    def __post_init__(self) -> None:
        if len(set(self.values)) != len(self.values) or len(self.values) < 2:
            raise ValueError(f"attribute {self.key!r} needs at least two distinct values, got {self.values}")
        for template in (*self.statements, *self.changes, self.answer_sentence, self.answer_sentence_self):
            if "{value}" not in template:
                raise ValueError(f"attribute {self.key!r}: template {template!r} does not place {{value}}")


def indefinite_article(word: str) -> str:
    """'an' before a vowel letter, else 'a'; good enough for this vocabulary."""
    return "an" if word[:1].lower() in "aeiou" else "a"


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        key="colour",
        values=("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown"),
        statements=("My favourite colour is {value}.", "I really love the colour {value}."),
        changes=("Actually, my favourite colour is {value} now.", "These days I like {value} best."),
        question="What is {name}'s favourite colour?",
        question_self="What is my favourite colour?",
        answer_sentence="{name}'s favourite colour is {value}.",
        answer_sentence_self="Your favourite colour is {value}.",
    ),
    Attribute(
        key="pet",
        values=("dog", "cat", "rabbit", "parrot", "horse", "turtle", "snake", "goat", "fish", "pig"),
        statements=("I have {a} {value} at home.", "My pet is {a} {value}."),
        changes=("I gave my old pet to my sister and got {a} {value}.", "Now my pet is {a} {value}."),
        question="What pet does {name} have?",
        question_self="What pet do I have?",
        answer_sentence="{name} has {a} {value}.",
        answer_sentence_self="You have {a} {value}.",
    ),
    Attribute(
        key="city",
        values=("Paris", "London", "Berlin", "Rome", "Madrid", "Tokyo", "Boston", "Chicago", "Dublin", "Vienna"),
        statements=("I live in {value}.", "My home is in {value}."),
        changes=("Actually, I moved to {value}.", "I just moved to {value} last week."),
        question="Where does {name} live?",
        question_self="Where do I live?",
        answer_sentence="{name} lives in {value}.",
        answer_sentence_self="You live in {value}.",
    ),
    Attribute(
        key="job",
        values=("teacher", "doctor", "nurse", "lawyer", "chef", "pilot", "farmer", "artist", "baker", "writer"),
        statements=("I work as {a} {value}.", "I am {a} {value} by trade."),
        changes=("I changed jobs, now I work as {a} {value}.", "I quit and became {a} {value}."),
        question="What is {name}'s job?",
        question_self="What is my job?",
        answer_sentence="{name} works as {a} {value}.",
        answer_sentence_self="You work as {a} {value}.",
    ),
    Attribute(
        key="drink",
        values=("tea", "coffee", "milk", "juice", "water", "beer", "wine", "soda", "cocoa", "cider"),
        statements=("My favourite drink is {value}.", "I drink {value} every day."),
        changes=("I switched to {value}.", "These days I drink {value} instead."),
        question="What does {name} like to drink?",
        question_self="What do I like to drink?",
        answer_sentence="{name} likes to drink {value}.",
        answer_sentence_self="You like to drink {value}.",
    ),
    Attribute(
        key="sport",
        values=("tennis", "golf", "soccer", "hockey", "rugby", "cricket", "baseball", "basketball", "volleyball"),
        statements=("I play {value} on weekends.", "My favourite sport is {value}."),
        changes=("I stopped that and took up {value}.", "Now I play {value} instead."),
        question="What sport does {name} play?",
        question_self="What sport do I play?",
        answer_sentence="{name} plays {value}.",
        answer_sentence_self="You play {value}.",
    ),
    Attribute(
        key="instrument",
        values=("piano", "guitar", "violin", "drums", "flute", "trumpet", "harp", "organ", "bass", "horn"),
        statements=("I play the {value}.", "I have been learning the {value}."),
        changes=("I switched instruments, now I play the {value}.", "These days I practise the {value}."),
        question="What instrument does {name} play?",
        question_self="What instrument do I play?",
        answer_sentence="{name} plays the {value}.",
        answer_sentence_self="You play the {value}.",
    ),
    Attribute(
        key="fruit",
        values=("apple", "banana", "mango", "grape", "lemon", "cherry", "peach", "pear", "plum"),
        statements=("My favourite fruit is the {value}.", "I eat {a} {value} every morning."),
        changes=("Lately my favourite fruit is the {value}.", "Now I eat {a} {value} every morning instead."),
        question="What is {name}'s favourite fruit?",
        question_self="What is my favourite fruit?",
        answer_sentence="{name}'s favourite fruit is the {value}.",
        answer_sentence_self="Your favourite fruit is the {value}.",
    ),
)

# Speaker A names per split: disjoint pools, so a held-out (name, facts) pair can never occur in training.
TRAIN_NAMES: tuple[str, ...] = (
    "Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack",
    "Kate", "Leo", "Maria", "Nick", "Olivia", "Paul", "Rosa", "Sam", "Tina", "Victor",
    "Wendy", "Adam", "Bella", "Carl", "Diana", "Eric", "Fiona", "George", "Helen", "Ivan",
    "Julia", "Kevin", "Laura", "Mark", "Nina", "Oscar", "Peter", "Ruth", "Simon", "Tom",
)  # fmt: skip
HELDOUT_NAMES: tuple[str, ...] = (
    "Alice", "Brian", "Chloe", "Daniel", "Ella", "Felix", "Hannah", "Isaac", "Jane", "Karl",
    "Lily", "Martin", "Nora", "Owen", "Philip", "Rachel", "Steve", "Ursula", "Walter", "Zoe",
)  # fmt: skip
# Speaker B (the assistant side) never states facts, so one pool serves both splits.
PARTNER_NAMES: tuple[str, ...] = ("Mel", "Jo", "Alex", "Chris", "Pat", "Robin", "Kim", "Lee")

# Small talk; none of these may contain an attribute value as a word (a test checks).
FILLERS_A: tuple[str, ...] = (
    "Work has been busy lately.",
    "I watched a good movie last night.",
    "The weekend went by too fast.",
    "I finally cleaned the kitchen.",
    "My neighbours had a party yesterday.",
    "I read a nice book this week.",
    "I went for a long walk today.",
    "My phone broke again.",
)
FILLERS_B: tuple[str, ...] = (
    "How was your week?",
    "Anything new with you?",
    "I had a quiet day myself.",
    "It has been a long week here too.",
    "I am planning a short trip soon.",
    "Glad to hear from you.",
)
ACKNOWLEDGEMENTS: tuple[str, ...] = (
    "Nice!",
    "That sounds great.",
    "Good to know.",
    "Oh, cool.",
    "I will remember that.",
    "Interesting!",
)
FIRST_GREETINGS_A: tuple[str, ...] = ("Hi, I'm {name}.", "Hello! My name is {name}.")
FIRST_GREETINGS_B: tuple[str, ...] = ("Nice to meet you, {name}!", "Hi {name}, I'm {partner}.")
LATER_GREETINGS_A: tuple[str, ...] = ("Hi {partner}!", "Hey {partner}, good to see you again.")
LATER_GREETINGS_B: tuple[str, ...] = ("Hi {name}! How have you been?", "Hello again, {name}.")
