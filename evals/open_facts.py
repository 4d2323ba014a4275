# ruff: noqa: E501 (sentence tables, one template per line)
"""The open-vocabulary facts of the synthetic conversations: attributes, where their values come from, and the
sentences around them.

Values are drawn from Faker (real city, country and job lists, generated companies, first names, dates, phone
numbers and codes), so there are hundreds to unlimited values per attribute, of one to several tokens: an adapter
cannot do well by memorising a vocabulary. Every template list is split in two: `train` templates are the only
ones training sees; `heldout` templates (other wordings, never seen in training) are the only ones the held-out
conversations use. Values and names are split by value in `value_pools.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

TEMPLATE_SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Wordings:
    """One kind of sentence in the two template splits."""

    train: tuple[str, ...]
    heldout: tuple[str, ...]

    def of(self, split: str) -> tuple[str, ...]:
        return self.train if split == "train" else self.heldout


@dataclass(frozen=True)
class Attribute:
    """One kind of personal fact. Templates use {value}, {a} (the indefinite article of value), {previous} and
    {a_previous} (the replaced value, in change sentences) and {name} (the speaker asked about)."""

    key: str
    pool: str  # the value pool it draws from (value_pools.POOLS)
    statements: Wordings  # a speaker states their own value
    questions_self: Wordings  # speaker A (the user) asks about themself
    questions: Wordings  # third person, LoCoMo style: about a speaker by name
    answer_self: str  # the answer to speaker A, as a sentence
    answer: str  # the answer about a named speaker
    changes: Wordings | None = None  # a later statement that replaces the value (None: the fact never changes)

    def __post_init__(self) -> None:
        for wordings in (self.statements, self.changes):
            for template in () if wordings is None else (*wordings.train, *wordings.heldout):
                if "{value}" not in template:
                    raise ValueError(f"attribute {self.key!r}: {template!r} does not place {{value}}")
        for wordings in (self.statements, self.questions_self, self.questions, self.changes):
            if wordings is not None and (not wordings.train or not wordings.heldout):
                raise ValueError(f"attribute {self.key!r}: every wording needs train and heldout templates")
        if "{value}" not in self.answer_self or "{value}" not in self.answer or "{name}" not in self.answer:
            raise ValueError(f"attribute {self.key!r}: answers must place {{value}} (and {{name}} in the third person)")


def indefinite_article(word: str) -> str:
    """'an' before a vowel letter, else 'a' (good enough for job titles)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def fill(template: str, value: str, name: str = "", previous: str = "") -> str:
    return template.format(
        value=value,
        a=indefinite_article(value),
        name=name,
        previous=previous,
        a_previous=indefinite_article(previous),
    )


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        key="city",
        pool="city",
        statements=Wordings(
            train=(
                "I live in {value}.",
                "My home is in {value}.",
                "I'm based in {value} these days.",
                "I have an apartment in {value}.",
                "Home for me is {value}.",
            ),
            heldout=("I've been living in {value} for a few years now.", "My flat is in {value}."),
        ),
        changes=Wordings(
            train=(
                "I moved from {previous} to {value} last month.",
                "Big news: I just moved to {value}.",
                "I don't live in {previous} anymore, I moved to {value}.",
            ),
            heldout=("We relocated from {previous} to {value} in the spring.", "I packed up and settled in {value}."),
        ),
        questions_self=Wordings(
            train=("Where do I live?", "Which city do I live in?", "What city is my home?"),
            heldout=("Which city do I live in now?", "Where is my home these days?"),
        ),
        questions=Wordings(
            train=("Where does {name} live?", "Which city does {name} live in?", "What city is {name}'s home?"),
            heldout=("In which city is {name} living now?", "Where is {name} based?"),
        ),
        answer_self="You live in {value}.",
        answer="{name} lives in {value}.",
    ),
    Attribute(
        key="country",
        pool="country",
        statements=Wordings(
            train=(
                "I'm originally from {value}.",
                "I grew up in {value}.",
                "My family comes from {value}.",
                "I was raised in {value}.",
            ),
            heldout=("{value} is where I was born and raised.", "I spent my childhood in {value}."),
        ),
        questions_self=Wordings(
            train=("Where am I from?", "Which country do I come from?", "Where did I grow up?"),
            heldout=("What is my home country?", "In which country was I raised?"),
        ),
        questions=Wordings(
            train=("Where is {name} from?", "Which country does {name} come from?", "Where did {name} grow up?"),
            heldout=("What is {name}'s home country?", "In which country was {name} raised?"),
        ),
        answer_self="You are from {value}.",
        answer="{name} is from {value}.",
    ),
    Attribute(
        key="job",
        pool="job",
        statements=Wordings(
            train=(
                "I work as {a} {value}.",
                "I'm {a} {value}.",
                "I've been {a} {value} for years.",
                "By profession I am {a} {value}.",
            ),
            heldout=("I earn my living as {a} {value}.", "I started working as {a} {value} after college."),
        ),
        changes=Wordings(
            train=("I changed careers and now work as {a} {value}.", "I quit being {a_previous} {previous} and became {a} {value}."),
            heldout=("After some retraining I'm now {a} {value}.",),
        ),
        questions_self=Wordings(
            train=("What is my job?", "What do I do for work?", "What's my profession?"),
            heldout=("How do I earn a living?", "What do I work as?"),
        ),
        questions=Wordings(
            train=("What is {name}'s job?", "What does {name} do for work?", "What is {name}'s profession?"),
            heldout=("How does {name} earn a living?", "What does {name} work as?"),
        ),
        answer_self="You work as {a} {value}.",
        answer="{name} works as {a} {value}.",
    ),
    Attribute(
        key="employer",
        pool="company",
        statements=Wordings(
            train=(
                "I work at {value}.",
                "My employer is {value}.",
                "I got a job at {value}.",
                "I've been with {value} for two years.",
            ),
            heldout=("My company, {value}, keeps me busy.", "I joined {value} last year."),
        ),
        changes=Wordings(
            train=("I left {previous} and joined {value}.", "I switched employers, I'm at {value} now."),
            heldout=("These days my paycheck comes from {value}.",),
        ),
        questions_self=Wordings(
            train=("Where do I work?", "Which company do I work for?", "Who is my employer?"),
            heldout=("What company employs me?", "Which firm am I with?"),
        ),
        questions=Wordings(
            train=("Where does {name} work?", "Which company does {name} work for?", "Who is {name}'s employer?"),
            heldout=("What company employs {name}?", "Which firm is {name} with?"),
        ),
        answer_self="You work at {value}.",
        answer="{name} works at {value}.",
    ),
    Attribute(
        key="dog",
        pool="pet_name",
        statements=Wordings(
            train=(
                "My dog is called {value}.",
                "I have a dog named {value}.",
                "Our dog's name is {value}.",
                "{value} is the name of my dog.",
            ),
            heldout=("We adopted a puppy and called her {value}.", "My dog {value} loves long walks."),
        ),
        questions_self=Wordings(
            train=("What is my dog called?", "What is my dog's name?", "What did I name my dog?"),
            heldout=("What do I call my dog?", "Do you remember my dog's name?"),
        ),
        questions=Wordings(
            train=("What is {name}'s dog called?", "What is the name of {name}'s dog?", "What did {name} name the dog?"),
            heldout=("What does {name} call the dog?", "How is {name}'s dog named?"),
        ),
        answer_self="Your dog is called {value}.",
        answer="{name}'s dog is called {value}.",
    ),
    Attribute(
        key="sister",
        pool="relative_name",
        statements=Wordings(
            train=("My sister is called {value}.", "I have a sister named {value}.", "My sister's name is {value}."),
            heldout=("My big sister {value} visited last week.", "I grew up with my sister {value}."),
        ),
        questions_self=Wordings(
            train=("What is my sister called?", "What is my sister's name?", "Who is my sister?"),
            heldout=("What do we call my sister?", "Do you remember my sister's name?"),
        ),
        questions=Wordings(
            train=("What is {name}'s sister called?", "What is the name of {name}'s sister?", "Who is {name}'s sister?"),
            heldout=("What do people call {name}'s sister?", "How is {name}'s sister named?"),
        ),
        answer_self="Your sister is called {value}.",
        answer="{name}'s sister is called {value}.",
    ),
    Attribute(
        key="birthday",
        pool="birthday",
        statements=Wordings(
            train=("My birthday is on {value}.", "I was born on {value}.", "I celebrate my birthday on {value}."),
            heldout=("Every year on {value} I throw a birthday party.", "{value} is my birthday."),
        ),
        questions_self=Wordings(
            train=("When is my birthday?", "On what date was I born?", "What day is my birthday?"),
            heldout=("Which date do I celebrate my birthday?", "When do I have my birthday?"),
        ),
        questions=Wordings(
            train=("When is {name}'s birthday?", "On what date was {name} born?", "What day is {name}'s birthday?"),
            heldout=("Which date does {name} celebrate a birthday?", "When does {name} have a birthday?"),
        ),
        answer_self="Your birthday is on {value}.",
        answer="{name}'s birthday is on {value}.",
    ),
    Attribute(
        key="phone",
        pool="phone",
        statements=Wordings(
            train=("My phone number is {value}.", "You can call me at {value}.", "My number is {value}."),
            heldout=("Reach me on {value} any time.", "If you need me, dial {value}."),
        ),
        changes=Wordings(
            train=("I got a new number: {value}.", "My old number {previous} no longer works, use {value}."),
            heldout=("Please update your contacts, I'm on {value} now.",),
        ),
        questions_self=Wordings(
            train=("What is my phone number?", "What's my number?", "At what number can I be reached?"),
            heldout=("Which number should people dial to reach me?", "What number am I on?"),
        ),
        questions=Wordings(
            train=("What is {name}'s phone number?", "What's {name}'s number?", "At what number can {name} be reached?"),
            heldout=("Which number should people dial to reach {name}?", "What number is {name} on?"),
        ),
        answer_self="Your phone number is {value}.",
        answer="{name}'s phone number is {value}.",
    ),
    Attribute(
        key="wifi_password",
        pool="password",
        statements=Wordings(
            train=("The wifi password is {value}.", "Our wifi password is {value}.", "The password for my wifi is {value}."),
            heldout=("To get online at my place, use the password {value}.", "The network key at home is {value}."),
        ),
        changes=Wordings(
            train=("I changed the wifi password to {value}.", "The wifi password is now {value}, not {previous}."),
            heldout=("I reset the router, so the password is {value} now.",),
        ),
        questions_self=Wordings(
            train=("What is the wifi password?", "What's my wifi password?", "Which password does my wifi use?"),
            heldout=("How do I log on to my home network?", "What's the network key at my place?"),
        ),
        questions=Wordings(
            train=("What is {name}'s wifi password?", "What's the password of {name}'s wifi?", "Which password does {name}'s wifi use?"),
            heldout=("How does one log on to {name}'s home network?", "What's the network key at {name}'s place?"),
        ),
        answer_self="Your wifi password is {value}.",
        answer="{name}'s wifi password is {value}.",
    ),
    Attribute(
        key="colour",
        pool="colour",
        statements=Wordings(
            train=("My favourite colour is {value}.", "I love the colour {value}.", "{value} is my favourite colour."),
            heldout=("Nothing beats {value} as a colour for me.", "I paint everything {value}."),
        ),
        changes=Wordings(
            train=("These days my favourite colour is {value}.", "I'm over {previous}, now I like {value} best."),
            heldout=("My taste changed, and {value} is my colour now.",),
        ),
        questions_self=Wordings(
            train=("What is my favourite colour?", "Which colour do I like best?", "What colour do I love?"),
            heldout=("Which colour would I pick over any other?", "What's my colour of choice?"),
        ),
        questions=Wordings(
            train=("What is {name}'s favourite colour?", "Which colour does {name} like best?", "What colour does {name} love?"),
            heldout=("Which colour would {name} pick over any other?", "What's {name}'s colour of choice?"),
        ),
        answer_self="Your favourite colour is {value}.",
        answer="{name}'s favourite colour is {value}.",
    ),
)  # fmt: skip

BY_KEY: dict[str, Attribute] = {attribute.key: attribute for attribute in ATTRIBUTES}


@dataclass(frozen=True)
class SmallTalk:
    """Turns that state no fact, per template split: speaker A's remarks and speaker B's replies."""

    remarks: Wordings
    replies: Wordings
    acknowledgements: Wordings
    asking_back: Wordings  # A asks B about the same thing
    closers: Wordings  # B's short answer to an acknowledgement
    greetings: Wordings  # A's first turn of a session; {partner} is speaker B
    greeting_replies: Wordings  # B's answer; {name} is speaker A


SMALL_TALK = SmallTalk(
    remarks=Wordings(
        train=(
            "Work has been busy lately.",
            "I watched a good movie last night.",
            "The weekend went by too fast.",
            "I finally cleaned the kitchen.",
            "My neighbours had a party yesterday.",
            "I read a nice book this week.",
            "I went for a long walk today.",
            "My phone broke again.",
        ),
        heldout=(
            "It rained all afternoon here.",
            "I tried a new recipe for dinner.",
            "Traffic was terrible this morning.",
            "I slept really well last night.",
        ),
    ),
    replies=Wordings(
        train=(
            "How was your week?",
            "Anything new with you?",
            "I had a quiet day myself.",
            "It has been a long week here too.",
            "I am planning a short trip soon.",
        ),
        heldout=("Same here, honestly.", "That happens to me too.", "Oh, tell me more some time."),
    ),
    acknowledgements=Wordings(
        train=("Nice!", "That sounds great.", "Good to know.", "Oh, cool.", "I will remember that.", "Interesting!"),
        heldout=("Got it.", "Noted, thanks.", "How lovely."),
    ),
    asking_back=Wordings(
        train=("What about you?", "And you?", "How about you?"),
        heldout=("Your turn, what's yours?", "Same question to you!"),
    ),
    closers=Wordings(train=("Yes!", "Indeed.", "Right."), heldout=("Sure thing.", "Absolutely.")),
    greetings=Wordings(
        train=("Hi {partner}!", "Hey {partner}, good to see you.", "Hello {partner}, how are you?"),
        heldout=("Morning, {partner}!", "{partner}, long time no see!"),
    ),
    greeting_replies=Wordings(
        train=("Hi {name}! How have you been?", "Hello, {name}.", "Good to see you, {name}."),
        heldout=("Hey {name}, what's up?", "Oh hi {name}!"),
    ),
)
