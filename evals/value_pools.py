"""Value and name pools from Faker, split by value into a training part and a held-out part.

Each pool is made once per process from seeded Faker instances (Faker is pinned, so the pools are the same on
every machine), cleaned (no commas, brackets or slashes; at most 24 characters), deduplicated and sorted. A value
belongs to the held-out part when the SHA-256 of its lower-cased text falls in the top quarter: the split depends
on the value alone, so one string is held out in every pool it occurs in, and no training example can ever hold a
held-out value. Speaker names are split the same way. Names of pets and relatives exclude every speaker name, so a
question about a person never has another person's name as its answer.
"""

from __future__ import annotations

import functools
import hashlib
import re

from faker import Faker

SEED = 2605_12357
HELDOUT_SHARE = 0.25
VALUE_SPLITS = ("train", "heldout")
_CLEAN = re.compile(r"^[^\W\d_][\w' .-]*$")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
# real city names (it_IT is left out: its city() depends on PYTHONHASHSEED, a set inside the provider)
CITY_LOCALES = ("de_DE", "es_ES", "pl_PL", "sv_SE", "pt_PT", "fi_FI", "da_DK", "cs_CZ")
NAME_LOCALES = ("de_DE", "fr_FR", "it_IT", "es_ES", "nl_NL", "sv_SE")
POOLS = (
    "city",
    "country",
    "job",
    "company",
    "pet_name",
    "relative_name",
    "birthday",
    "phone",
    "password",
    "colour",
    "name",
)


def value_split(value: str) -> str:
    """'heldout' or 'train', from the value's text alone."""
    digest = hashlib.sha256(value.strip().lower().encode()).digest()
    return "heldout" if int.from_bytes(digest[:4], "big") < HELDOUT_SHARE * 2**32 else "train"


def pool(name: str, split: str) -> tuple[str, ...]:
    """The values of pool `name` in value split `split` ('train' or 'heldout'), sorted."""
    if split not in VALUE_SPLITS:
        raise ValueError(f"unknown value split {split!r}; expected one of {VALUE_SPLITS}")
    return _split_pools()[name][split]


@functools.cache
def _split_pools() -> dict[str, dict[str, tuple[str, ...]]]:
    raw = {name: _draw(name) for name in POOLS}
    speakers = {value.lower() for value in raw["name"]}
    for name in ("pet_name", "relative_name"):
        raw[name] = [value for value in raw[name] if value.lower() not in speakers]
    return {
        name: {split: tuple(v for v in values if value_split(v) == split) for split in VALUE_SPLITS}
        for name, values in raw.items()
    }


def _faker(locale: str | tuple[str, ...] = "en_US", offset: int = 0) -> Faker:
    fake = Faker(list(locale) if isinstance(locale, tuple) else locale)
    fake.seed_instance(SEED + offset)
    return fake


def _clean(values, limit: int = 24) -> list[str]:
    kept = {v.strip() for v in values if len(v.strip()) <= limit and _CLEAN.match(v.strip())}
    return sorted(kept)


def _draw(name: str) -> list[str]:
    if name == "city":
        fakes = [_faker(locale, i) for i, locale in enumerate(CITY_LOCALES)]
        return _clean(fake.city() for fake in fakes for _ in range(1500))
    if name == "country":
        fake = _faker()
        return _clean(fake.country() for _ in range(3000))
    if name == "job":
        fake = _faker()
        titles = (fake.job() for _ in range(6000))
        return _clean(t if t[1:2].isupper() else t[0].lower() + t[1:] for t in titles)  # "IT trainer" stays
    if name == "company":
        fake = _faker(offset=1)
        return _clean(fake.company() for _ in range(3000))
    if name in ("pet_name", "relative_name"):  # one list of names, alternately dealt to the two pools
        fake = _faker(NAME_LOCALES, 2)
        names = _clean(fake.first_name() for _ in range(6000))
        return names[::2] if name == "pet_name" else names[1::2]
    if name == "name":
        fake = _faker(offset=3)
        return _clean(fake.first_name() for _ in range(4000))
    if name == "birthday":
        fake = _faker(offset=4)
        return sorted({_day(fake.date_of_birth()) for _ in range(4000)})
    if name == "phone":
        fake = _faker(offset=5)
        return sorted({fake.numerify("###-####") for _ in range(3000)})
    if name == "password":
        fake = _faker(offset=6)
        words = (word for _ in range(6000) if len(word := fake.word()) >= 4 and word.isalpha() and word.islower())
        return sorted({word + fake.numerify("##") for word in words})
    if name == "colour":
        fake = _faker()
        return _clean(_CAMEL.sub(" ", fake.color_name()).lower() for _ in range(3000))
    raise ValueError(f"unknown pool {name!r}; expected one of {POOLS}")


def _day(date) -> str:
    """'March 14' (month name spelled out rather than strftime, which follows the process locale)."""
    months = (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    )  # fmt: skip
    return f"{months[date.month - 1]} {date.day}"
