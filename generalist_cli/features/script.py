"""Writing systems: which script a language is written in, the share of a text's letters in it, and the
vocabulary tokens that would write letters of another script.

Whisper's multilingual decoder, asked for Hindi, often writes romanised Hindi, Urdu or an English translation
(measured on real Hindi: 20 % Devanagari letters from whisper-base). Decoding therefore keeps to the output
language's script: :func:`script_tokens` sorts, once per script and tokenizer, the tokens whose bytes hold a
letter (or the lead bytes of one) of a script that is neither the language's nor Latin (never written), the
tokens that cannot open a text in the script (Latin, digits, punctuation: written once the text has begun),
the Latin ones among them (written while the text has three of its own letters per Latin one: English words in
code-mixed Hindi stay, romanised Hindi does not) and the tokens that begin inside a character. The script of a
letter is the first word of its Unicode name (``DEVANAGARI LETTER KA``), so no table of code-point ranges is
kept by hand.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Whisper language code -> the Unicode script names its text is written in (besides Latin, always allowed)
SCRIPTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("hi", "mr", "ne", "sa"), ("DEVANAGARI",)),
    "pa": ("GURMUKHI",),
    "bn": ("BENGALI",),
    "as": ("BENGALI",),
    "ta": ("TAMIL",),
    "te": ("TELUGU",),
    "kn": ("KANNADA",),
    "ml": ("MALAYALAM",),
    "gu": ("GUJARATI",),
    "or": ("ORIYA",),
    "si": ("SINHALA",),
    **dict.fromkeys(("ur", "ar", "fa", "ps", "sd"), ("ARABIC",)),
    **dict.fromkeys(("he", "yi"), ("HEBREW",)),
    **dict.fromkeys(("ru", "uk", "bg", "be", "mk", "kk", "tg", "ba", "tt", "mn"), ("CYRILLIC",)),
    "el": ("GREEK",),
    "th": ("THAI",),
    "lo": ("LAO",),
    "km": ("KHMER",),
    "my": ("MYANMAR",),
    "ka": ("GEORGIAN",),
    "hy": ("ARMENIAN",),
    "am": ("ETHIOPIC",),
    "bo": ("TIBETAN",),
    **dict.fromkeys(("zh", "yue"), ("CJK",)),
    "ja": ("CJK", "HIRAGANA", "KATAKANA"),
    "ko": ("HANGUL", "CJK"),
    **dict.fromkeys(
        (
            "en",
            "de",
            "es",
            "fr",
            "it",
            "pt",
            "nl",
            "pl",
            "sv",
            "da",
            "no",
            "nn",
            "fi",
            "cs",
            "sk",
            "ro",
            "hu",
            "hr",
            "sl",
            "ca",
            "tr",
            "id",
            "ms",
            "vi",
            "lt",
            "lv",
            "et",
            "cy",
            "ga",
            "is",
            "sw",
            "tl",
            "jw",
            "su",
            "af",
            "eu",
            "gl",
            "la",
            "mt",
            "lb",
            "br",
            "oc",
            "ha",
            "yo",
            "so",
            "sn",
            "mi",
            "haw",
            "ln",
            "fo",
            "ht",
            "bs",
            "sq",
            "uz",
            "az",
            "tk",
        ),
        ("LATIN",),
    ),
}


def script_of(language: str, task: str = "transcribe") -> tuple[str, ...] | None:
    """The scripts the output of ``task`` in ``language`` is written in (translate: English); None: unknown."""
    return SCRIPTS.get("en" if task == "translate" else language)


KNOWN = frozenset(s for v in SCRIPTS.values() for s in v) - {"LATIN"}
SHARED = frozenset("\u0964\u0965")  # the danda and double danda end sentences in every Indic script


def char_script(ch: str) -> str:
    """The script of a letter, mark or digit (``DEVANAGARI``, ``LATIN``, ``CJK``, ...), or of punctuation that
    belongs to one script (``ARABIC FULL STOP``); "" for anything else (spaces, common punctuation, symbols,
    joiners, the danda) and for marks common to many scripts."""
    category = unicodedata.category(ch)
    if category in ("Cn", "Co", "Cs"):  # unassigned, private use, surrogates: never text
        return "UNASSIGNED"
    kind = category[0]
    if kind not in "LMNPS" or ch in SHARED:
        return ""
    if ch.isascii():
        return "LATIN" if kind in "LMN" else ""
    name = unicodedata.name(ch, "")
    if name.startswith("COMBINING") or not name:
        return ""
    word = name.split()[0]
    word = "CJK" if word in ("CJK", "IDEOGRAPHIC") else word
    return word if kind in "LMN" or word in KNOWN else ""


def script_share(text: str, language: str) -> float | None:
    """The share of ``text``'s letters (Unicode L and M) written in ``language``'s script; None when the language's
    script is unknown or the text has no letters."""
    scripts = script_of(language)
    if scripts is None:
        return None
    letters = [char_script(c) for c in text if unicodedata.category(c)[0] in "LM"]
    letters = [s for s in letters if s]
    return sum(s in scripts for s in letters) / len(letters) if letters else None


@dataclass(frozen=True)
class ScriptTokens:
    """Text tokens sorted by the letters they write, for one target script."""

    banned: tuple[int, ...]  # a letter (or a letter's lead bytes) of another script: never
    later: tuple[int, ...]  # everything else (Latin, digits, punctuation): only once the text has begun in its own
    # script
    latin: tuple[int, ...]  # Latin letters (a subset of ``later``): only while they stay a minority of the text
    continuing: tuple[int, ...]  # tokens that begin inside a character: only right after one left open


def script_tokens(tokenizer, scripts: tuple[str, ...]) -> ScriptTokens:
    """:class:`ScriptTokens` of ``tokenizer`` for ``scripts``, computed once per tokenizer and scripts (~0.2 s)."""
    scripts = tuple(sorted(scripts))
    memo = tokenizer.__dict__.setdefault("_script_tokens", {})
    if scripts not in memo:
        own = set(scripts)
        banned, later, latin, continuing = [], [], [], []
        for i, data in enumerate(tokenizer.token_bytes()):
            if data and 0x80 <= data[0] < 0xC0:
                continuing.append(i)
            whole, partial = _letters(data)
            if whole - own - {"LATIN"} or (partial and not partial & (own | {"LATIN"})):
                banned.append(i)
                continue
            if "LATIN" not in own and not _opens(data, own):
                later.append(i)
            if "LATIN" in whole and "LATIN" not in own:
                latin.append(i)
        memo[scripts] = ScriptTokens(tuple(banned), tuple(later), tuple(latin), tuple(continuing))
    return memo[scripts]


def text_state(tokenizer, scripts: tuple[str, ...], seq: list[int]) -> tuple[bytes, int, int]:
    """What the text of ``seq`` is so far: the bytes of a character it leaves unfinished (b"" when it ends
    whole), and how many of its letters are in ``scripts`` and how many Latin."""
    table = tokenizer.token_bytes()
    data = b"".join(table[t] for t in seq if t < len(table))
    prefix = b""
    for back in range(1, min(3, len(data)) + 1):
        n = _utf8_length(data[-back])
        if n:
            prefix = data[-back:] if back < n and n > 1 else b""
            break
    text = data[: len(data) - len(prefix)].decode("utf-8", errors="ignore")
    letters = [char_script(c) for c in text if unicodedata.category(c)[0] == "L"]
    return prefix, sum(x in scripts for x in letters), letters.count("LATIN")


def completions(tokenizer, scripts: tuple[str, ...], prefix: bytes, *, letter: bool = False) -> tuple[int, ...]:
    """The tokens that may follow an unfinished character ``prefix``: those that finish it as a character of
    ``scripts`` (or Latin, or common; with ``letter``, as a letter of ``scripts``: the text's first). Cached."""
    scripts = tuple(sorted(scripts))
    memo = tokenizer.__dict__.setdefault("_completions", {})
    key = (scripts, prefix, letter)
    if key not in memo:
        own = set(scripts) | {"LATIN"}
        table = tokenizer.token_bytes()
        ok = []
        for i in script_tokens(tokenizer, scripts).continuing:
            joined = prefix + table[i]
            whole, partial = _letters(joined)
            if len(joined) < _utf8_length(prefix[0]) or whole - own or (partial and not partial & own):
                continue
            if not letter or _opens(joined, set(scripts)):
                ok.append(i)
        memo[key] = tuple(ok)
    return memo[key]


def _opens(data: bytes, scripts: set[str]) -> bool:
    """Whether a token may begin a text in ``scripts``: after any spaces, a letter of them (not a vowel sign or a
    danda) or the lead bytes of one; spaces alone too."""
    rest = data.lstrip(b" ")
    if not rest:
        return True
    n = _utf8_length(rest[0])
    if n == 0:
        return False
    if len(rest) < n:
        return bool(set().union(*(_block_scripts(b) for b in _blocks(rest, n))) & scripts)
    ch = rest[:n].decode("utf-8", errors="ignore")  # a lead byte followed by non-continuation bytes: not one char
    return len(ch) == 1 and unicodedata.category(ch) == "Lo" and char_script(ch) in scripts


def _letters(data: bytes) -> tuple[set[str], set[str]]:
    """Scripts of a token's whole letters, and the scripts a character it leaves open at its end can be in.
    Continuation bytes at its start finish a character the token before began and say nothing."""
    whole: set[str] = set()
    i = 0
    while i < len(data) and 0x80 <= data[i] < 0xC0:
        i += 1
    while i < len(data):
        n = _utf8_length(data[i])
        chunk = data[i : i + n]
        if n == 0:  # a stray byte
            i += 1
            continue
        if len(chunk) < n:  # the token ends inside a character
            whole.discard("")
            return whole, set().union(*(_block_scripts(b) for b in _blocks(chunk, n)))
        try:
            whole.add(char_script(chunk.decode("utf-8")))
        except UnicodeDecodeError:
            pass
        i += n
    whole.discard("")
    return whole, set()


def _utf8_length(lead: int) -> int:
    """Bytes of the UTF-8 sequence ``lead`` starts; 0 for a continuation or invalid byte."""
    if lead < 0x80:
        return 1
    return 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if 0xF0 <= lead < 0xF8 else 0


def _blocks(prefix: bytes, n: int) -> range:
    """The 64-code-point blocks a UTF-8 sequence of ``n`` bytes starting with ``prefix`` can fall in."""
    rest = n - len(prefix)
    cp = prefix[0] & {2: 0x1F, 3: 0x0F, 4: 0x07}[n]
    for b in prefix[1:]:
        cp = (cp << 6) | (b & 0x3F)
    low, high = cp << (6 * rest), min(((cp + 1) << (6 * rest)) - 1, 0x10FFFF)
    return range(low >> 6, (high >> 6) + 1)


@lru_cache(maxsize=None)
def _block_scripts(block: int) -> frozenset[str]:
    found = {char_script(chr(cp)) for cp in range(block << 6, (block + 1) << 6) if not 0xD800 <= cp < 0xE000}
    found.discard("")
    return frozenset(found)
