"""Cutting a streamed reply into speakable pieces (assistant.speech.speakable): pure text, fast."""

from __future__ import annotations

import random

import pytest

from assistant.speech.speakable import (
    FIRST_CLAUSE_WORDS,
    FIRST_WORDS,
    LONG,
    Speakable,
    clean,
    guess_language,
    sentence_end,
    split,
    streamed,
)

REPLY = """Sure! Here is what I found. Dr. Smith arrived at 3.14 p.m. on Jan. 5, e.g. the day after.

## Steps
1. Open the **settings** page.
2. Click [Save](https://example.com/save) 🎉 now.
- A bullet with `inline code` in it.

```python
print("hi. there.")
x = 3.5
```

| a | b |
|---|---|
| 1 | 2 |

---
> Quoted wisdom. Still quoted.

See https://docs.python.org/3/library for more. J. R. R. Tolkien wrote it. Done"""

EXPECTED = [
    "Sure!",
    "Here is what I found.",
    "Dr. Smith arrived at 3.14 p.m. on Jan. 5, e.g. the day after.",
    "Steps",
    "Open the settings page.",
    "Click Save now.",
    "A bullet with inline code in it.",
    "Quoted wisdom.",
    "Still quoted.",
    "See docs.python.org for more.",
    "J. R. R. Tolkien wrote it.",
    "Done",
]


def chunked(text: str, seed: int, most: int = 6) -> list[str]:
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(text):
        n = rng.randint(1, most)
        chunks.append(text[i : i + n])
        i += n
    return chunks


def test_a_markdown_reply_becomes_the_sentences_a_person_would_say():
    assert split(REPLY) == EXPECTED


@pytest.mark.parametrize("seed", range(40))
def test_streaming_in_any_chunks_gives_the_same_pieces(seed):
    assert streamed(chunked(REPLY, seed)) == EXPECTED


def test_one_character_at_a_time():
    assert streamed(list(REPLY)) == EXPECTED


def test_a_sentence_is_given_out_as_soon_as_the_next_one_starts():
    pieces = Speakable()
    assert pieces.feed("The capital of France is Paris") == []
    assert pieces.feed(".") == []  # "Paris." could be "Paris. e.g." : wait for the next word
    assert pieces.feed(" It") == ["The capital of France is Paris."]
    assert pieces.feed(" is big! And") == ["It is big!"]
    assert pieces.flush() == ["And"]


def test_exclamation_and_question_need_only_a_space():
    pieces = Speakable()
    assert pieces.feed("Hello there! ") == ["Hello there!"]
    assert pieces.feed("Really? ") == ["Really?"]


@pytest.mark.parametrize(
    "text",
    [
        "Mr. Brown met Dr. Who at St. Paul's today.",
        "Prices rose 2.5 percent in the U.S. last year.",
        "Use a tool, e.g. a hammer, or i.e. anything.",
        "Version 3.11.2 fixed it.",
        "It costs approx. 12 dollars vs. 15 elsewhere.",
        "Written by J. K. Rowling in Edinburgh.",
    ],
)
def test_abbreviations_initials_and_numbers_do_not_end_a_sentence(text):
    # After a first piece (which may end before its sentence does), pieces are whole sentences.
    assert split("Hello! " + text + " Next one.") == ["Hello!", text, "Next one."]


def test_a_number_at_the_end_of_a_sentence_does_end_it():
    assert split("It was built in 1889. Then it grew.") == ["It was built in 1889.", "Then it grew."]


def test_ellipsis_and_quotes():
    assert split('He said "go home." Then left… Later he came back.') == [
        'He said "go home."',
        "Then left…",
        "Later he came back.",
    ]


def test_code_blocks_tables_and_rules_are_not_read():
    text = "Before.\n```\nrm -rf /tmp/x. Now!\n```\n| x | y |\n|--|--|\n***\nAfter."
    assert split(text) == ["Before.", "After."]


def test_an_unclosed_code_block_is_not_read_either():
    assert split("Look:\n```python\nprint('x. Y')\n") == ["Look:"]


def test_list_items_and_headings_are_pieces_without_their_markers():
    text = "# Title\n* one\n+ two\n3) three\n10. ten items"
    assert split(text) == ["Title", "one", "two", "three", "ten items"]


def test_long_sentences_are_cut_at_a_comma():
    long = (
        "This is a rather long sentence that keeps on going, with one clause after another, "
        "and it never seems to reach its end, because the writer likes commas very much, "
        "and so it goes on and on until it finally stops."
    )
    pieces = split(long)
    assert len(pieces) >= 2
    assert all(len(p) <= LONG + 40 for p in pieces)
    assert " ".join(pieces) == long


def test_a_long_run_without_any_punctuation_is_cut_at_a_space():
    words = " ".join(["word"] * 120)
    pieces = split(words)
    assert len(pieces) >= 2 and " ".join(pieces) == words


@pytest.mark.parametrize(
    ("markdown", "said"),
    [
        ("**bold** and *italic* and ***both***", "bold and italic and both"),
        ("__under__ and _lined_ but snake_case_name stays", "under and lined but snake_case_name stays"),
        ("~~struck~~ out", "struck out"),
        ("see <https://example.org/a?b=c>", "see example.org"),
        ("visit www.python.org/downloads.", "visit python.org."),
        ("![a cat](cat.png) sits", "a cat sits"),
        ("fire 🔥🔥 and 👍🏽 thumbs", "fire and thumbs"),
        ("a <b>tag</b> here", "a tag here"),
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("🎉🎉", ""),
        ("| --- |", ""),
    ],
)
def test_markdown_marks_urls_and_emoji_are_not_read_as_symbols(markdown, said):
    assert clean(markdown) == said


def test_sentence_end_says_where():
    assert sentence_end("One. Two") == 4
    assert sentence_end("One") is None
    assert sentence_end("Dr. Who") is None


# --- the first piece ends sooner ------------------------------------------------------------

FIRST = "Sure, the capital of France is Paris, which sits on the Seine. It has about two million people."


def test_the_first_piece_ends_at_a_comma_once_it_has_a_few_words():
    pieces = Speakable()
    assert pieces.feed("Hello there, my good friend,") == []  # "Hello there," is too short
    assert pieces.feed(" how are you today? I") == ["Hello there, my good friend,", "how are you today?"]
    assert pieces.flush() == ["I"]


@pytest.mark.parametrize("mark", [";", ":", " -", " —"])
def test_the_first_piece_ends_at_other_clause_marks_too(mark):
    assert split(f"Here are the four steps{mark} open it first. Then close it.") == [
        f"Here are the four steps{mark}",
        "open it first.",
        "Then close it.",
    ]


def test_the_first_piece_ends_after_a_few_words_when_no_comma_comes():
    pieces = Speakable()
    assert pieces.feed("One two three four five six") == []  # "six" may go on: "sixty"
    assert pieces.feed(" seven") == ["One two three four five six"]
    assert pieces.feed(" eight. Nine ten eleven twelve thirteen fourteen fifteen. Sixteen") == [
        "seven eight.",
        "Nine ten eleven twelve thirteen fourteen fifteen.",  # later pieces are whole sentences
    ]
    assert pieces.flush() == ["Sixteen"]


def test_the_thresholds_are_what_the_tests_assume():
    assert (FIRST_CLAUSE_WORDS, FIRST_WORDS) == (4, 6)


def test_only_the_first_piece_is_cut_short_and_the_rest_are_whole_sentences():
    assert split(FIRST) == [
        "Sure, the capital of France is",
        "Paris, which sits on the Seine.",
        "It has about two million people.",
    ]
    later = "It is big, old and beautiful, with many long streets, and it never sleeps at night."
    assert split("Yes! " + later + " " + later) == ["Yes!", later, later]


def test_a_first_sentence_shorter_than_the_threshold_is_still_one_piece():
    assert split("The capital is Paris. It is big.") == ["The capital is Paris.", "It is big."]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("It costs 1,000 dollars or 3,5 euros in all shops today.", "It costs 1,000 dollars or 3,5"),
        ("Pi is 3.14159 and e is 2.71828 to five places.", "Pi is 3.14159 and e is"),
        (
            "See https://example.com/a,b;c?x=1.5 or www.python.org/x,y for all the rest.",
            "See example.com or python.org for all",
        ),
        (
            "Click [the big red button on the page](https://x.y/z) to save it all.",
            "Click the big red button on the page",
        ),
        (
            "Run `pip install --upgrade the package` in a terminal window now.",
            "Run pip install --upgrade the package",
        ),
        ("We all went to see Dr. Smith and his wife here.", "We all went to see Dr. Smith"),
        ("The book is by J. R. R. Tolkien and is long.", "The book is by J. R. R. Tolkien"),
        ("Prices rose in the whole U.S. economy last year.", "Prices rose in the whole U.S. economy"),
        ("**Paris** is *the* capital 🎉 of France and big.", "Paris is the capital of France"),
    ],
)
def test_the_first_piece_is_never_cut_inside_a_number_url_link_code_or_after_an_abbreviation(text, first):
    pieces = split(text)
    assert pieces[0] == first
    assert " ".join(pieces) == clean(text)


@pytest.mark.parametrize("seed", range(20))
def test_the_first_piece_is_cut_at_the_same_place_in_any_chunks(seed):
    assert streamed(chunked(FIRST, seed)) == split(FIRST)


def test_a_heading_first_is_one_piece_and_then_sentences_are_whole():
    text = "## How to make a good cup of tea\nBoil the water, then pour it over the leaves slowly."
    assert split(text) == [
        "How to make a good cup of tea",
        "Boil the water, then pour it over the leaves slowly.",
    ]


def test_after_flush_the_next_reply_starts_soon_again():
    pieces = Speakable()
    assert pieces.feed("Fine. ") == []
    assert pieces.flush() == ["Fine."]
    assert pieces.feed("Well, the answer is simple, you see. ") == ["Well, the answer is simple,"]
    assert pieces.flush() == ["you see."]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("The weather is nice today and the sun is out.", "en"),
        ("El tiempo es bueno hoy y el sol está fuera de la casa.", "es"),
        ("Le temps est beau aujourd'hui et le soleil est là pour nous.", "fr"),
        ("Das Wetter ist heute schön und die Sonne ist auch da.", "de"),
        ("Hi", None),
    ],
)
def test_guess_language(text, language):
    assert guess_language(text) == language


def test_a_sure_guess_is_none_on_a_tie_even_when_short():
    assert guess_language("La maison de ma mère") == "es"  # fr and es tie: the first wins
    assert guess_language("La maison de ma mère", sure=True) is None
    assert guess_language("La maison de ma mère est belle", sure=True) == "fr"
