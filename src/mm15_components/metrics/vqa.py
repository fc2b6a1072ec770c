"""The answer normalisation of the VQA evaluation (VQAv2, TextVQA), as its EvalAI evaluator
applies it to predictions and human answers alike.

In order: lower-case; drop commas and question marks (so ``"1,000"`` is ``"1000"``); split
``'s`` off its word (``"man's"`` -> ``"man 's"``); treat newlines and tabs as spaces; delete
each other punctuation mark when it touches a space somewhere in the text, else replace it by
a space; drop full stops not followed by a digit (``"3.5"`` stays); map number words up to
ten (and ``none``) to digits; drop the articles ``a``, ``an``, ``the``; restore the
apostrophes of common contractions (``"dont"`` -> ``"don't"``). Other characters (``%``,
``$``, ``:``, ``&``, letters of any script) are kept.
"""

from __future__ import annotations

import re

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">")
PUNCTUATION += ("<", "@", "`", "!")
FULL_STOP = re.compile(r"\.(?!\d)")
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})

# The contractions the VQA evaluation restores. Words that are also English words without
# their apostrophe (its, well, were, shed, ill, ...) are not among them.
_CONTRACTED = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't
haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't
mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've
should've shouldn't shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've
someone'll someone's something'd something'd've something'll that's there'd there'd've
there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't
what'll what're what's what've when's where'd where's where've who'd who'd've who'll who's
who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've
you'd you'd've you'll you're you've
""".split()


def _without_one_apostrophe(word: str) -> list[str]:
    return [word[:i] + word[i + 1 :] for i, char in enumerate(word) if char == "'"]


CONTRACTIONS = {variant: word for word in _CONTRACTED for variant in _without_one_apostrophe(word)}
"""A contraction missing one of its apostrophes -> the contraction (``"couldnt've"``,
``"couldn'tve"`` -> ``"couldn't've"``)."""


def _punctuation(text: str) -> str:
    out = text
    for mark in PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touches_space else " ")
    return FULL_STOP.sub("", out)


def normalize_vqa_answer(answer: str) -> str:
    """``answer`` normalised as the VQA evaluation compares answers (see the module doc)."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    text = _punctuation(text.replace("\n", " ").replace("\t", " ").strip())
    words = [NUMBER_WORDS.get(word, word) for word in text.split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)
