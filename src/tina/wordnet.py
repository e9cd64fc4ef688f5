"""WordNet 3.0 nouns: the group (lexicographer file) and gloss of a class name.

Reads the plain-text database that Debian's ``wordnet-base`` installs under
``/usr/share/wordnet``: ``index.noun`` maps a lemma to its synset offsets (most frequent sense
first) and ``data.noun`` holds, on the line of each offset, the lexicographer file number and
the gloss. Only the first noun sense of each lemma is kept.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = "/usr/share/wordnet"

# The 45 lexicographer files of WordNet 3.0, by number (see WordNet's lexnames(5WN)).
LEXNAMES = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)

# WordNet's detachment rules for nouns (morphy): plural suffix -> singular suffix.
_NOUN_SUFFIXES = (
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("s", ""),
)


@dataclass(frozen=True)
class NounSense:
    """The first noun sense of a lemma."""

    gloss: str  # the definition, without the quoted usage examples
    lexname: str  # lexicographer file, e.g. "noun.animal"
    offset: int  # byte offset of the synset in data.noun


class WordNet:
    """Noun lookup by class name: exact lemma first, then WordNet's plural rules."""

    def __init__(self, root: str | Path = DEFAULT_ROOT):
        self.root = Path(root)
        self.nouns = load_nouns(self.root)
        self.exceptions = _load_exceptions(self.root / "noun.exc")

    def lemma(self, name: str) -> str | None:
        """The WordNet lemma (underscores) for ``name``, or None when it is not a noun."""
        key = _key(name)
        if key in self.nouns:
            return key
        for base in self.exceptions.get(key, ()):
            if base in self.nouns:
                return base
        for plural, singular in _NOUN_SUFFIXES:
            if key.endswith(plural) and len(key) > len(plural):
                base = key[: len(key) - len(plural)] + singular
                if base in self.nouns:
                    return base
        return None

    def sense(self, name: str) -> NounSense | None:
        """The first noun sense of ``name`` (after plural reduction), or None."""
        lemma = self.lemma(name)
        return None if lemma is None else self.nouns[lemma]


def check_root(root: str | Path = DEFAULT_ROOT) -> Path:
    """Return ``root`` if it holds WordNet's noun files, else raise FileNotFoundError."""
    root = Path(root)
    missing = [n for n in ("index.noun", "data.noun") if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet 3.0 not found at {root} (missing {', '.join(missing)}): "
            "apt-get install wordnet-base, or point wordnet_root at a folder with "
            "index.noun and data.noun"
        )
    return root


@functools.lru_cache(maxsize=4)
def load_nouns(root: str | Path = DEFAULT_ROOT) -> dict[str, NounSense]:
    """Map every noun lemma (lower-case, underscores for spaces) to its first sense."""
    root = check_root(root)
    synsets = _read_synsets(root / "data.noun")
    nouns = {}
    with open(root / "index.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith(" "):  # licence header
                continue
            fields = line.split()
            n_pointers = int(fields[3])
            first_offset = int(fields[6 + n_pointers])
            nouns[fields[0].lower()] = synsets[first_offset]
    return nouns


def describe(name: str, root: str | Path = DEFAULT_ROOT) -> str | None:
    """The gloss of the first noun sense of ``name`` (e.g. "hot pepper"), or None."""
    sense = _wordnet(str(root)).sense(name)
    return None if sense is None else sense.gloss


@functools.lru_cache(maxsize=4)
def _wordnet(root: str) -> WordNet:
    return WordNet(root)


def _key(name: str) -> str:
    return "_".join(name.strip().lower().split())


def _read_synsets(path: Path) -> dict[int, NounSense]:
    """Parse data.noun: offset -> NounSense (lexicographer file and cleaned gloss)."""
    synsets = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(" "):
                continue
            head, _, gloss = line.partition(" | ")
            offset, lex_filenum = head.split(" ", 2)[:2]
            synsets[int(offset)] = NounSense(
                gloss=clean_gloss(gloss), lexname=LEXNAMES[int(lex_filenum)], offset=int(offset)
            )
    return synsets


def clean_gloss(gloss: str) -> str:
    """Keep the definition: drop the quoted usage examples and trailing separators."""
    definition = gloss.split('"', 1)[0]
    return definition.strip().rstrip(";").strip()


def _load_exceptions(path: Path) -> dict[str, tuple[str, ...]]:
    """noun.exc: irregular plural -> base forms (empty when the file is absent)."""
    if not path.is_file():
        return {}
    table = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = line.split()
            if len(words) >= 2:
                table[words[0]] = tuple(words[1:])
    return table
