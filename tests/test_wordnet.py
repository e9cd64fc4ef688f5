"""WordNet noun parsing on hand-written files in the database format, and on Debian's files."""

from pathlib import Path

import pytest

from tina import wordnet

REAL_ROOT = Path("/usr/share/wordnet")

LICENCE = "  1 This software and database is being provided to you, the LICENSEE, by  \n"

# Synsets: (lexicographer file number, words, pointers, gloss). Offsets are computed below
# as in the real file: the byte position of the line.
SYNSETS = [
    (5, "llama 0", "001 @ 00000000 n 0000", "wild or domesticated South American animal"),
    (
        20,
        "tabasco_pepper 0 hot_pepper 0",
        "000",
        'plant bearing very hot peppers; grown in the Gulf Coast states; "a pot of peppers"',
    ),
    (13, "hot_pepper 0", "000", "any of various pungent capsicum fruits"),
    (5, "goose 0", "000", 'web-footed long-necked bird; "the goose honked"'),
    (13, "coconut 0", "000", "the edible white meat of a coconut; often shredded"),
]


def write_files(folder: Path) -> dict[str, int]:
    """data.noun, index.noun and noun.exc in WordNet's format; returns lemma -> first offset."""
    lines, offsets, position = [], [], len(LICENCE)
    for lex, words, pointers, gloss in SYNSETS:
        n_words = len(words.split()) // 2
        line = f"{position:08d} {lex:02d} n {n_words:02x} {words} {pointers} | {gloss}  \n"
        offsets.append(position)
        lines.append(line)
        position += len(line.encode())
    (folder / "data.noun").write_text(LICENCE + "".join(lines))
    index = [
        LICENCE,
        f"coconut n 1 0 1 0 {offsets[4]:08d}  \n",
        f"goose n 1 1 @ 1 0 {offsets[3]:08d}  \n",
        f"hot_pepper n 2 2 @ ~ 2 0 {offsets[1]:08d} {offsets[2]:08d}  \n",
        f"llama n 1 1 @ 1 0 {offsets[0]:08d}  \n",
        f"tabasco_pepper n 1 0 1 0 {offsets[1]:08d}  \n",
    ]
    (folder / "index.noun").write_text("".join(index))
    (folder / "noun.exc").write_text("geese goose\n")
    return {"llama": offsets[0], "hot_pepper": offsets[1], "goose": offsets[3]}


@pytest.fixture
def tiny_root(tmp_path):
    write_files(tmp_path)
    yield tmp_path
    wordnet.load_nouns.cache_clear()


def test_load_nouns_reads_first_sense_group_and_gloss(tiny_root):
    offsets = write_files(tiny_root)
    nouns = wordnet.load_nouns(tiny_root)
    assert sorted(nouns) == ["coconut", "goose", "hot_pepper", "llama", "tabasco_pepper"]
    assert nouns["llama"] == wordnet.NounSense(
        gloss="wild or domesticated South American animal",
        lexname="noun.animal",
        offset=offsets["llama"],
    )
    # The first of two senses (the plant), with the usage example stripped.
    assert nouns["hot_pepper"].lexname == "noun.plant"
    assert nouns["hot_pepper"].offset == offsets["hot_pepper"]
    assert nouns["hot_pepper"].gloss == (
        "plant bearing very hot peppers; grown in the Gulf Coast states"
    )
    assert nouns["goose"].gloss == "web-footed long-necked bird"
    assert nouns["coconut"].lexname == "noun.food"


def test_lookup_by_name_with_spaces_case_and_plurals(tiny_root):
    net = wordnet.WordNet(tiny_root)
    assert net.lemma("Hot Pepper") == "hot_pepper"
    assert net.lemma("llamas") == "llama"
    assert net.lemma("geese") == "goose"  # irregular plural from noun.exc
    assert net.lemma("coconuts") == "coconut"
    assert net.lemma("ankle boot") is None
    assert net.sense("hot pepper").lexname == "noun.plant"
    assert wordnet.describe("llama", root=tiny_root) == (
        "wild or domesticated South American animal"
    )
    assert wordnet.describe("femur-left", root=tiny_root) is None


def test_lexnames_are_the_standard_45():
    assert len(wordnet.LEXNAMES) == 45
    assert wordnet.LEXNAMES[3] == "noun.Tops"
    assert wordnet.LEXNAMES[5] == "noun.animal"
    assert wordnet.LEXNAMES[28] == "noun.time"
    assert all(name.startswith("noun.") for name in wordnet.LEXNAMES[3:29])


def test_missing_database_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        wordnet.load_nouns(tmp_path / "nowhere")


@pytest.mark.skipif(not (REAL_ROOT / "data.noun").is_file(), reason="wordnet-base not installed")
def test_real_wordnet_parses_right():
    wordnet.load_nouns.cache_clear()
    nouns = wordnet.load_nouns(REAL_ROOT)
    assert len(nouns) == 117798  # WordNet 3.0 noun lemmas
    assert nouns["llama"].lexname == "noun.animal"
    assert nouns["coconut"].lexname == "noun.food"
    assert nouns["t-shirt"].lexname == "noun.artifact"
    assert nouns["llama"].gloss.startswith("wild or domesticated South American")
    assert '"' not in "".join(sense.gloss for sense in nouns.values())
