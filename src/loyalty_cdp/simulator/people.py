"""Synthetic personal identifiers: names, unique emails, phones, card numbers and member ids.

Every identifier that must be unique across members (user id, email, phone, loyalty card,
POS customer id) is built from the member's index through a seeded affine permutation,
so two members never share one, whatever the seed. Emails use the reserved
``example.com/.org/.net`` domains and phones the ``555`` exchange, so no real person is named.
"""

from __future__ import annotations

import math
import random

MAX_MEMBERS = 10_000_000

FIRST_NAMES = (
    "Ada", "Adrian", "Aisha", "Alba", "Amir", "Ana", "Anders", "Ann", "Beatriz", "Ben",
    "Camille", "Carlos", "Chen", "Chloe", "Dario", "Diego", "Elena", "Emma", "Farah", "Felix",
    "Grace", "Hana", "Hugo", "Ines", "Ivan", "Jade", "Jonas", "Julia", "Kai", "Kenji",
    "Lara", "Leo", "Lina", "Lucas", "Maya", "Mei", "Mila", "Nadia", "Noah", "Nora",
    "Omar", "Oscar", "Priya", "Rafael", "Rosa", "Sam", "Sara", "Sofia", "Tariq", "Theo",
    "Uma", "Victor", "Wen", "Yara", "Yusuf", "Zoe",
)
LAST_NAMES = (
    "Almeida", "Andersen", "Baker", "Bianchi", "Brown", "Castro", "Chen", "Costa", "Dubois",
    "Evans", "Fischer", "Garcia", "Gonzalez", "Hansen", "Ito", "Jansen", "Kim", "Kowalski",
    "Larsen", "Lee", "Lopez", "Martin", "Meyer", "Moreau", "Nakamura", "Nguyen", "Novak",
    "Okafor", "Olsen", "Patel", "Perez", "Petrov", "Rossi", "Santos", "Schmidt", "Silva",
    "Smith", "Tanaka", "Taylor", "Virtanen", "Wagner", "Walker", "Wang", "Weber", "Wilson",
    "Yilmaz", "Zhang",
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
# Area codes paired with exchanges 555-599 (555 is the fictional exchange of films and books).
AREA_CODES = (
    "202", "206", "212", "213", "303", "305", "312", "404", "415", "503", "512", "602", "614",
    "617", "702", "713", "718", "801", "808", "813", "857", "904", "917", "919", "971",
)
FIRST_EXCHANGE, EXCHANGES = 555, 45
CARD_PREFIX = "6035"


def luhn_check_digit(digits: str) -> str:
    """The Luhn check digit that makes ``digits + check`` pass the Luhn test."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and luhn_check_digit(number[:-1]) == number[-1]


class Scrambler:
    """A seeded bijection of ``range(modulus)``: index -> (a * index + b) mod modulus."""

    def __init__(self, modulus: int, rng: random.Random) -> None:
        multiplier = rng.randrange(1, modulus)
        while math.gcd(multiplier, modulus) != 1:
            multiplier += 1
        self.modulus = modulus
        self.multiplier = multiplier
        self.offset = rng.randrange(modulus)

    def __call__(self, index: int) -> int:
        return (self.multiplier * index + self.offset) % self.modulus


class IdentityFactory:
    """Deals out the identifiers of member ``index``; unique across indexes below MAX_MEMBERS."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"identities:{seed}")
        self._user = Scrambler(10**9, rng)
        self._email = Scrambler(10**8, rng)
        self._phone = Scrambler(len(AREA_CODES) * EXCHANGES * 10**4, rng)
        self._card = Scrambler(10**11, rng)
        self._pos = Scrambler(10**10, rng)

    def user_id(self, index: int) -> str:
        return f"M{self._user(index):09d}"

    def email(self, index: int, first: str, last: str) -> str:
        number = self._email(index)
        domain = EMAIL_DOMAINS[number % len(EMAIL_DOMAINS)]
        return f"{first.lower()}.{last.lower()}{number // len(EMAIL_DOMAINS)}@{domain}"

    def phone(self, index: int) -> str:
        """An E.164 US number ``+1 AAA EEE LLLL`` with an exchange from 555 to 599."""
        number = self._phone(index)
        area = AREA_CODES[number % len(AREA_CODES)]
        rest = number // len(AREA_CODES)
        exchange = FIRST_EXCHANGE + rest // 10**4
        return f"+1{area}{exchange:03d}{rest % 10**4:04d}"

    def card_number(self, index: int) -> str:
        body = f"{CARD_PREFIX}{self._card(index):011d}"
        return body + luhn_check_digit(body)

    def pos_customer_id(self, index: int) -> str:
        return f"POS{self._pos(index):010d}"


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def random_uuid(rng: random.Random) -> str:
    """A version-4 UUID string drawn from ``rng`` (so it is reproducible from the seed).

    Equal to ``str(uuid.UUID(int=bits, version=4))``, at half the cost.
    """
    text = f"{rng.getrandbits(128) & _UUID_CLEAR | _UUID_SET:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def styled_phone(e164: str, rng: random.Random) -> str:
    """The number as a person might type it: E.164, national with punctuation, or dotted."""
    area, exchange, line = e164[2:5], e164[5:8], e164[8:]
    style = rng.random()
    if style < 0.5:
        return e164
    if style < 0.8:
        return f"({area}) {exchange}-{line}"
    return f"+1 {area}.{exchange}.{line}"


def styled_email(email: str, rng: random.Random) -> str:
    """The address, now and then typed with capitals (normalisation should undo it)."""
    if rng.random() < 0.8:
        return email
    local, _, domain = email.partition("@")
    return f"{local.title()}@{domain.capitalize()}"
