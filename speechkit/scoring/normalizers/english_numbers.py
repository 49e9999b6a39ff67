"""Spelled-out English numbers to digits, with whisper's exact behaviour.

This is a re-statement of whisper's ``EnglishNumberNormalizer`` (openai/whisper c0d2f62), which the Open
ASR leaderboard uses unchanged. Its quirks are part of the metric ("point" before a non-decimal word is
dropped, "one"/"ones" are written back as words, ...), so they are reproduced on purpose; the golden
tables in ``tests/data/normalizers/`` are the judge.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction

_ONES = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()  # fmt: skip
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_BIG = "hundred thousand million billion trillion quadrillion quintillion sextillion septillion " \
       "octillion nonillion decillion".split()  # fmt: skip

ZEROS = frozenset({"o", "oh", "zero"})
ONES = {word: i for i, word in enumerate(_ONES, start=1)}
TENS = {word: 10 * i for i, word in enumerate(_TENS, start=2)}
MULTIPLIERS = {"hundred": 100, **{word: 1000**i for i, word in enumerate(_BIG[1:], start=1)}}

# plural and ordinal forms carry the suffix that is kept on the digits: "sixties" -> "60s"
_ONES_ORDINAL_SPECIAL = {"zeroth": 0, "first": 1, "second": 2, "third": 3, "fifth": 5, "twelfth": 12}
ONES_SUFFIXED: dict[str, tuple[int, str]] = {
    **{("sixes" if w == "six" else w + "s"): (v, "s") for w, v in ONES.items()},
    **{w: (v, "st" if v == 1 else "nd" if v == 2 else "rd" if v == 3 else "th")
       for w, v in _ONES_ORDINAL_SPECIAL.items()},
    **{w + ("h" if w.endswith("t") else "th"): (v, "th") for w, v in ONES.items()
       if v not in (1, 2, 3, 5, 12)},
}  # fmt: skip
TENS_SUFFIXED: dict[str, tuple[int, str]] = {
    **{w.replace("y", "ies"): (v, "s") for w, v in TENS.items()},
    **{w.replace("y", "ieth"): (v, "th") for w, v in TENS.items()},
}
MULTIPLIERS_SUFFIXED: dict[str, tuple[int, str]] = {
    **{w + "s": (v, "s") for w, v in MULTIPLIERS.items()},
    **{w + "th": (v, "th") for w, v in MULTIPLIERS.items()},
}
DECIMAL_WORDS = frozenset(ONES) | frozenset(TENS) | ZEROS
SIGN_WORDS = {"minus": "-", "negative": "-", "plus": "+", "positive": "+"}
CURRENCY_WORDS = {"pound": "£", "pounds": "£", "euro": "€", "euros": "€",
                  "dollar": "$", "dollars": "$", "cent": "¢", "cents": "¢"}  # fmt: skip
PREFIX_SYMBOLS = frozenset(SIGN_WORDS.values()) | frozenset(CURRENCY_WORDS.values())
SPECIALS = frozenset({"and", "double", "triple", "point"})
NUMBER_WORDS = (ZEROS | set(ONES) | set(ONES_SUFFIXED) | set(TENS) | set(TENS_SUFFIXED) | set(MULTIPLIERS)
                | set(MULTIPLIERS_SUFFIXED) | set(SIGN_WORDS) | set(CURRENCY_WORDS) | {"per", "percent"}
                | SPECIALS)  # fmt: skip

_NUMERAL = re.compile(r"^\d+(\.\d+)?$")
_HALF = re.compile(r"\band\s+a\s+half\b")
_LETTER_DIGIT = re.compile(r"([a-z])([0-9])")
_DIGIT_LETTER = re.compile(r"([0-9])([a-z])")
_DETACHED_SUFFIX = re.compile(r"([0-9])\s+(st|nd|rd|th|s)\b")
_CURRENCY_AND_CENTS = re.compile(r"([€£$])([0-9]+) (?:and )?¢([0-9]{1,2})\b")
_ZERO_CURRENCY = re.compile(r"[€£$]0.([0-9]{1,2})\b")  # "." unescaped upstream: any character matches
_LONE_ONE = re.compile(r"\b1(s?)\b")
_ASCII_DIGIT = re.compile(r"[0-9]")

Value = int | str  # an int while arithmetic is possible, digits-as-text once it is not


def _fraction(text: Value) -> Fraction | None:
    try:
        return Fraction(text)
    except ValueError:
        return None


def _append_digit(value: Value, digit: int, prev: str | None) -> str | int:
    """Combine the running value with a ones word (1..19), as spoken numbers do."""
    if isinstance(value, str) or prev in ONES:
        if prev in TENS and digit < 10:  # "twenty" then "one": replace the trailing zero
            return value[:-1] + str(digit)
        return str(value) + str(digit)
    place = 10 if digit < 10 else 100
    return value + digit if value % place == 0 else str(value) + str(digit)


def _append_tens(value: Value, tens: int) -> Value:
    if isinstance(value, str):
        return value + str(tens)
    return value + tens if value % 100 == 0 else str(value) + str(tens)


def _scale(value: int, multiplier: int) -> int:
    """Apply a multiplier to the last group below a thousand: 'two thousand three hundred'."""
    return value // 1000 * 1000 + value % 1000 * multiplier


class _Reader:
    """One pass over the words; ``value``/``prefix`` hold the number being built."""

    def __init__(self) -> None:
        self.prefix: str | None = None
        self.value: Value | None = None
        self.skip_next = False  # set when a word also consumed the next one ("per cent", "double o")

    def emit(self, item: Value) -> str:
        text = str(item)
        if self.prefix is not None:
            text = self.prefix + text
        self.value = None
        self.prefix = None
        return text

    def flush(self) -> Iterator[str]:
        if self.value is not None:
            yield self.emit(self.value)

    def numeral(self, word: str) -> Iterator[str]:
        signed = word[0] in PREFIX_SYMBOLS
        digits = word[1:] if signed else word
        number = _fraction(digits)
        if number is None:
            raise ValueError(f"not a numeral: {word!r}")
        if self.value is not None:
            if isinstance(self.value, str) and self.value.endswith("."):
                self.value = self.value + word  # decimal part or next IP-address group
                return
            yield self.emit(self.value)
        if signed:
            self.prefix = word[0]
        self.value = number.numerator if number.denominator == 1 else digits

    def multiplier(self, multiplier: int, suffix: str | None) -> Iterator[str]:
        value = self.value
        if value is None:
            if suffix is None:
                self.value = multiplier
            else:
                yield self.emit(str(multiplier) + suffix)
            return
        if isinstance(value, str) or (suffix is None and value == 0):
            product = None if (f := _fraction(value)) is None else f * multiplier
            if product is not None and product.denominator == 1:
                if suffix is None:
                    self.value = product.numerator
                else:
                    yield self.emit(str(product.numerator) + suffix)
            else:
                yield self.emit(value)
                if suffix is None:
                    self.value = multiplier
                else:
                    yield self.emit(str(multiplier) + suffix)
            return
        scaled = _scale(value, multiplier)
        if suffix is None:
            self.value = scaled
        else:
            yield self.emit(str(scaled) + suffix)

    def word(self, prev: str | None, word: str, nxt: str | None) -> Iterator[str]:  # noqa: C901
        """Consume one number word; sets ``skip_next`` when it also consumed ``nxt``."""
        self.skip_next = False
        next_is_number = nxt in NUMBER_WORDS or (nxt is not None and _NUMERAL.match(nxt) is not None)
        if word in ZEROS:
            self.value = str(self.value or "") + "0"
        elif word in ONES:
            digit = ONES[word]
            self.value = digit if self.value is None else _append_digit(self.value, digit, prev)
        elif word in ONES_SUFFIXED:
            digit, suffix = ONES_SUFFIXED[word]
            number = digit if self.value is None else _append_digit(self.value, digit, prev)
            yield self.emit(str(number) + suffix)
        elif word in TENS:
            tens = TENS[word]
            self.value = tens if self.value is None else _append_tens(self.value, tens)
        elif word in TENS_SUFFIXED:
            tens, suffix = TENS_SUFFIXED[word]
            number = tens if self.value is None else _append_tens(self.value, tens)
            yield self.emit(str(number) + suffix)
        elif word in MULTIPLIERS:
            yield from self.multiplier(MULTIPLIERS[word], None)
        elif word in MULTIPLIERS_SUFFIXED:
            yield from self.multiplier(*MULTIPLIERS_SUFFIXED[word])
        elif word in SIGN_WORDS:  # a sign only counts right before a number
            yield from self.flush()
            if next_is_number:
                self.prefix = SIGN_WORDS[word]
            else:
                yield self.emit(word)
        elif word in CURRENCY_WORDS:  # a currency word only counts right after a number
            if self.value is not None:
                self.prefix = CURRENCY_WORDS[word]
                yield self.emit(self.value)
            else:
                yield self.emit(word)
        elif word in ("per", "percent"):
            yield from self.percent(word, nxt)
        else:
            yield from self.special(prev, word, nxt, next_is_number)

    def percent(self, word: str, nxt: str | None) -> Iterator[str]:
        if self.value is None:
            yield self.emit(word)
        elif word == "percent":
            yield self.emit(str(self.value) + "%")
        elif nxt == "cent":  # "per cent"
            yield self.emit(str(self.value) + "%")
            self.skip_next = True
        else:
            yield self.emit(self.value)
            yield self.emit(word)

    def special(self, prev: str | None, word: str, nxt: str | None, next_is_number: bool) -> Iterator[str]:
        if not next_is_number:
            yield from self.flush()
            yield self.emit(word)
        elif word == "and":
            if prev not in MULTIPLIERS:  # "hundred and five" keeps counting; other "and"s are words
                yield from self.flush()
                yield self.emit(word)
        elif word in ("double", "triple"):
            if nxt in ONES or nxt in ZEROS:
                repeats = 2 if word == "double" else 3
                self.value = str(self.value or "") + str(ONES.get(nxt, 0)) * repeats
                self.skip_next = True
            else:
                yield from self.flush()
                yield self.emit(word)
        elif word == "point":
            if nxt in DECIMAL_WORDS or _NUMERAL.match(nxt or "") is not None:
                self.value = str(self.value or "") + "."
            # otherwise upstream drops "point" silently
        else:
            raise AssertionError(f"unhandled number word {word!r}")


def words_to_digits(words: list[str]) -> Iterator[str]:
    """Rewrite a list of lowercase words, turning spoken numbers into digits."""
    reader = _Reader()
    skip = False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        prev = words[i - 1] if i > 0 else None
        nxt = words[i + 1] if i + 1 < len(words) else None
        if _NUMERAL.match(word[1:] if word[0] in PREFIX_SYMBOLS else word):
            yield from reader.numeral(word)
        elif word not in NUMBER_WORDS:
            if reader.value is None and reader.prefix is None:
                yield word  # the common case, kept cheap
            else:
                yield from reader.flush()
                yield reader.emit(word)
        else:
            yield from reader.word(prev, word, nxt)
            skip = reader.skip_next
    yield from reader.flush()


def _halves(text: str) -> str:
    """'<number> and a half' -> '<number> point five'; other 'and a half's stay."""
    segments = _HALF.split(text)
    out: list[str] = []
    for i, segment in enumerate(segments):
        if not segment.strip():
            continue  # upstream drops an empty segment together with its "and a half"
        out.append(segment)
        if i < len(segments) - 1:
            last = segment.split()[-1]
            out.append("point five" if last in DECIMAL_WORDS or last in MULTIPLIERS else "and a half")
    return " ".join(out)


def _cents(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}.{int(match.group(3)):02d}"


class EnglishNumberNormalizer:
    """Callable: spelled-out numbers, currencies and percentages to digits and symbols.

    ``"two dollars and seventy cents"`` -> ``"$2.70"``, ``"nineteen fifties"`` -> ``"1950s"``,
    ``"double oh seven"`` -> ``"007"``. Input must already be lowercase with punctuation removed.
    """

    def __call__(self, text: str) -> str:
        # each rewrite is skipped when the characters it needs are absent (same result, faster)
        if "half" in text:
            text = _halves(text)
        if _ASCII_DIGIT.search(text):
            text = _DIGIT_LETTER.sub(r"\1 \2", _LETTER_DIGIT.sub(r"\1 \2", text))
            text = _DETACHED_SUFFIX.sub(r"\1\2", text)
        text = " ".join(words_to_digits(text.split()))
        if "¢" in text:
            text = _CURRENCY_AND_CENTS.sub(_cents, text)
        if "$" in text or "€" in text or "£" in text:
            text = _ZERO_CURRENCY.sub(lambda m: f"¢{int(m.group(1))}", text)
        return _LONE_ONE.sub(r"one\1", text) if "1" in text else text
