"""Whisper's languages and the codes users may type for them.

The order of ``LANGUAGES`` is the order of the language tokens in Whisper's vocabulary
(``<|en|>`` is the first token after ``<|startoftranscript|>``); large-v3 adds the 100th (``yue``).
A user may name a language by its Whisper code (``hi``), an ISO 639-2/3 code (``hin``) or its
English name (``hindi``); :func:`resolve_language` maps all of them to the Whisper code.
"""

from __future__ import annotations

from generalist_cli.errors import UsageError

# (whisper code, english name, other ISO 639 codes), in vocabulary order.
LANGUAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("en", "english", ("eng",)),
    ("zh", "chinese", ("chi", "zho")),
    ("de", "german", ("deu", "ger")),
    ("es", "spanish", ("spa",)),
    ("ru", "russian", ("rus",)),
    ("ko", "korean", ("kor",)),
    ("fr", "french", ("fra", "fre")),
    ("ja", "japanese", ("jpn",)),
    ("pt", "portuguese", ("por",)),
    ("tr", "turkish", ("tur",)),
    ("pl", "polish", ("pol",)),
    ("ca", "catalan", ("cat",)),
    ("nl", "dutch", ("dut", "nld")),
    ("ar", "arabic", ("ara",)),
    ("sv", "swedish", ("swe",)),
    ("it", "italian", ("ita",)),
    ("id", "indonesian", ("ind",)),
    ("hi", "hindi", ("hin",)),
    ("fi", "finnish", ("fin",)),
    ("vi", "vietnamese", ("vie",)),
    ("he", "hebrew", ("heb",)),
    ("uk", "ukrainian", ("ukr",)),
    ("el", "greek", ("ell", "gre")),
    ("ms", "malay", ("may", "msa")),
    ("cs", "czech", ("ces", "cze")),
    ("ro", "romanian", ("ron", "rum")),
    ("da", "danish", ("dan",)),
    ("hu", "hungarian", ("hun",)),
    ("ta", "tamil", ("tam",)),
    ("no", "norwegian", ("nor",)),
    ("th", "thai", ("tha",)),
    ("ur", "urdu", ("urd",)),
    ("hr", "croatian", ("hrv",)),
    ("bg", "bulgarian", ("bul",)),
    ("lt", "lithuanian", ("lit",)),
    ("la", "latin", ("lat",)),
    ("mi", "maori", ("mao", "mri")),
    ("ml", "malayalam", ("mal",)),
    ("cy", "welsh", ("cym", "wel")),
    ("sk", "slovak", ("slk", "slo")),
    ("te", "telugu", ("tel",)),
    ("fa", "persian", ("fas", "per")),
    ("lv", "latvian", ("lav",)),
    ("bn", "bengali", ("ben",)),
    ("sr", "serbian", ("srp",)),
    ("az", "azerbaijani", ("aze",)),
    ("sl", "slovenian", ("slv",)),
    ("kn", "kannada", ("kan",)),
    ("et", "estonian", ("est",)),
    ("mk", "macedonian", ("mac", "mkd")),
    ("br", "breton", ("bre",)),
    ("eu", "basque", ("baq", "eus")),
    ("is", "icelandic", ("ice", "isl")),
    ("hy", "armenian", ("arm", "hye")),
    ("ne", "nepali", ("nep",)),
    ("mn", "mongolian", ("mon",)),
    ("bs", "bosnian", ("bos",)),
    ("kk", "kazakh", ("kaz",)),
    ("sq", "albanian", ("alb", "sqi")),
    ("sw", "swahili", ("swa",)),
    ("gl", "galician", ("glg",)),
    ("mr", "marathi", ("mar",)),
    ("pa", "punjabi", ("pan",)),
    ("si", "sinhala", ("sin",)),
    ("km", "khmer", ("khm",)),
    ("sn", "shona", ("sna",)),
    ("yo", "yoruba", ("yor",)),
    ("so", "somali", ("som",)),
    ("af", "afrikaans", ("afr",)),
    ("oc", "occitan", ("oci",)),
    ("ka", "georgian", ("geo", "kat")),
    ("be", "belarusian", ("bel",)),
    ("tg", "tajik", ("tgk",)),
    ("sd", "sindhi", ("snd",)),
    ("gu", "gujarati", ("guj",)),
    ("am", "amharic", ("amh",)),
    ("yi", "yiddish", ("yid",)),
    ("lo", "lao", ("lao",)),
    ("uz", "uzbek", ("uzb",)),
    ("fo", "faroese", ("fao",)),
    ("ht", "haitian creole", ("hat",)),
    ("ps", "pashto", ("pus",)),
    ("tk", "turkmen", ("tuk",)),
    ("nn", "nynorsk", ("nno",)),
    ("mt", "maltese", ("mlt",)),
    ("sa", "sanskrit", ("san",)),
    ("lb", "luxembourgish", ("ltz",)),
    ("my", "myanmar", ("bur", "mya")),
    ("bo", "tibetan", ("bod", "tib")),
    ("tl", "tagalog", ("tgl",)),
    ("mg", "malagasy", ("mlg",)),
    ("as", "assamese", ("asm",)),
    ("tt", "tatar", ("tat",)),
    ("haw", "hawaiian", ()),
    ("ln", "lingala", ("lin",)),
    ("ha", "hausa", ("hau",)),
    ("ba", "bashkir", ("bak",)),
    ("jw", "javanese", ("jv", "jav")),
    ("su", "sundanese", ("sun",)),
    ("yue", "cantonese", ()),
)

# Other English names Whisper accepts for a language.
_ALIASES = {
    "burmese": "my",
    "valencian": "ca",
    "flemish": "nl",
    "haitian": "ht",
    "letzeburgesch": "lb",
    "pushto": "ps",
    "panjabi": "pa",
    "moldavian": "ro",
    "moldovan": "ro",
    "sinhalese": "si",
    "castilian": "es",
    "mandarin": "zh",
}

CODES: tuple[str, ...] = tuple(code for code, _, _ in LANGUAGES)
NAMES: dict[str, str] = {code: name for code, name, _ in LANGUAGES}

_LOOKUP: dict[str, str] = {}
for _code, _name, _others in LANGUAGES:
    _LOOKUP[_code] = _code
    _LOOKUP[_name] = _code
    for _other in _others:
        _LOOKUP.setdefault(_other, _code)
_LOOKUP.update(_ALIASES)


def resolve_language(value: str, *, allowed: tuple[str, ...] = CODES) -> str:
    """Return the Whisper code for ``value`` (``hi``, ``hin``, ``Hindi`` -> ``hi``).

    Raises :class:`UsageError` listing the valid codes when ``value`` names no language in
    ``allowed`` (a model may know fewer languages than Whisper large-v3).
    """
    code = _LOOKUP.get(value.strip().lower().replace("_", " "))
    if code is None or code not in allowed:
        raise UsageError(
            f"unknown language {value!r}",
            hint="use one of: " + ", ".join(allowed),
        )
    return code
