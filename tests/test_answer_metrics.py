import itertools

import pytest
import torch

from mm15_components.metrics import (
    ANLS,
    ExactMatch,
    RelaxedAccuracy,
    VQAAccuracy,
    choice_letter,
    normalize_vqa_answer,
)
from mm15_components.metrics.answers import levenshtein


def scores(metric, pairs):
    return metric.scores([p for p, _ in pairs], [r for _, r in pairs]).tolist()


# ---- VQA accuracy ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer, normalised",
    [
        ("Two dogs.", "2 dogs"),  # number word, final full stop
        ("The cat", "cat"),  # article
        ("an apple and a pear", "apple and pear"),
        ("none", "0"),
        ("1,000", "1000"),  # commas go first
        ("3.5", "3.5"),  # a full stop before a digit stays
        ("U.S.A.", "usa"),
        ("dont", "don't"),  # a contraction gets its apostrophe back
        ("couldnt've", "couldn't've"),
        ("couldntve", "couldntve"),  # both apostrophes missing: not in the table
        ("its", "its"),  # a word of its own, left alone
        ("man's hat", "man 's hat"),
        ("red-white", "red white"),  # a mark touching no space becomes one
        ("red - white", "red white"),  # a mark touching a space is deleted
        ("(yes)", "yes"),
        ("yes!", "yes"),
        ("50%", "50%"),  # % is not punctuation here
        ("10:30", "10:30"),
        ("\tYes\n", "yes"),
        ("Café Crème", "café crème"),  # letters of any script are kept
        ("", ""),
    ],
)
def test_vqa_normalisation(answer, normalised):
    assert normalize_vqa_answer(answer) == normalised


def vqa_by_definition(pred: str, refs: list[str]) -> float:
    """The official definition spelled out: over each subset of all answers but one, count
    the humans in it who gave the (normalised) prediction."""
    answer = normalize_vqa_answer(pred)
    refs = [normalize_vqa_answer(r) for r in refs]
    accs = []
    for left_out in range(len(refs)):
        others = refs[:left_out] + refs[left_out + 1 :]
        accs.append(min(1.0, sum(r == answer for r in others) / 3))
    return sum(accs) / len(accs)


def test_vqa_accuracy_worked_examples():
    refs = ["two"] * 3 + ["3"] * 6 + ["Three."]
    # 3 of 10 humans: 7 subsets keep all 3 (1.0), 3 subsets keep 2 (2/3): (7 + 2) / 10
    assert VQAAccuracy().score("2", refs) == pytest.approx(0.9)
    assert VQAAccuracy().score("three", refs) == pytest.approx(1.0)  # 7 humans
    assert VQAAccuracy().score("four", refs) == 0.0
    one, two = ["yes"] + ["no"] * 9, ["yes"] * 2 + ["no"] * 8
    assert VQAAccuracy().score("Yes", one) == pytest.approx(0.3)  # 9 subsets x 1/3 / 10
    assert VQAAccuracy().score("yes", two) == pytest.approx(0.6)  # (8 x 2/3 + 2 x 1/3) / 10
    assert VQAAccuracy().score("", one) == 0.0  # empty prediction
    assert VQAAccuracy().score("1000", ["1,000"] * 10) == 1.0
    assert VQAAccuracy().score("no", ["no"]) == 0.0  # one reference: nobody else agrees


def test_vqa_accuracy_matches_the_definition_on_random_answers():
    generator = torch.Generator().manual_seed(0)
    words = ["two", "2", "the 2", "three", "yes", "no", "dont", "don't", "red-white", "a b"]
    for _ in range(200):
        picks = torch.randint(len(words), (11,), generator=generator).tolist()
        pred, refs = words[picks[0]], [words[i] for i in picks[1:]]
        assert VQAAccuracy().score(pred, refs) == pytest.approx(vqa_by_definition(pred, refs))


# ---- ANLS -----------------------------------------------------------------------------------
def test_levenshtein_hand_values():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("straße", "strasse") == 2


def test_levenshtein_matches_brute_force_on_short_strings():
    def slow(a, b):  # the recursive definition
        if not a or not b:
            return len(a) + len(b)
        return min(slow(a[1:], b) + 1, slow(a, b[1:]) + 1, slow(a[1:], b[1:]) + (a[0] != b[0]))

    for a, b in itertools.product(["", "a", "ab", "ba", "abc", "cab", "bca"], repeat=2):
        assert levenshtein(a, b) == slow(a, b)


def test_anls_worked_examples():
    pairs = [
        ("Denver Broncos", ["Denver Broncos", "Denver R. Broncos"]),  # exact: 1
        ("12/15/89", ["12/15/88"]),  # 1 edit in 8: 7/8
        ("Dear dr. Lobo", ["Dear Dr. Lobo", "Dr. Lobo"]),  # case does not count: 1
        ("abc", ["xyz"]),  # similarity 0, under the threshold
        ("ab", ["ac"]),  # similarity exactly 0.5: kept
        ("abc", ["axy"]),  # 1/3, under the threshold: 0
        ("  Denver   Broncos ", ["denver broncos"]),  # whitespace collapsed: 1
        ("Denver  Bronco", ["Denver Broncos"]),  # 1 edit over 14 characters as written
        ("", ["abc"]),  # empty prediction
        ("café", ["cafe"]),  # 1 edit in 4
        ("ß", ["s"]),  # 1 edit; the official length is that of "SS": 1 - 1/2
        ("straße", ["STRASSE"]),  # 2 edits over 7
        ("wrong", ["nope", "wrung"]),  # the best reference counts: 1 - 1/5
    ]
    expected = [1, 7 / 8, 1, 0, 0.5, 0, 1, 1 - 1 / 14, 0, 0.75, 0.5, 1 - 2 / 7, 0.8]
    assert scores(ANLS(), pairs) == pytest.approx(expected)
    metric = ANLS()
    metric.update([p for p, _ in pairs], [r for _, r in pairs])
    assert metric.compute().item() == pytest.approx(sum(expected) / len(expected), abs=1e-6)
    assert ANLS(threshold=0.9).score("12/15/89", ["12/15/88"]) == 0.0


# ---- relaxed accuracy ------------------------------------------------------------------------
def test_relaxed_accuracy_worked_examples():
    pairs = [
        ("12", ["12.5"]),  # 4% off: right
        ("11.8", ["12.5"]),  # 5.6% off: wrong
        ("95", ["100"]),  # exactly 5%: right
        ("50%", ["0.5"]),  # a percentage is divided by 100
        ("50%", ["50"]),  # ... so it is not 50
        ("1,000", ["1000"]),  # not a number to float(): compared as text
        ("1,000", ["1,000"]),
        ("0.0", ["0"]),  # a reference of 0 is compared as text
        ("0", ["0"]),
        ("Yes", ["yes"]),  # text ignores case
        (" yes\n", ["yes"]),  # and surrounding whitespace
        ("", ["12"]),  # empty prediction
        ("١٢", ["12"]),  # Arabic-Indic digits are a number to float()
        ("nan", ["12"]),
        ("7", ["3", "7.2"]),  # the best reference counts
    ]
    expected = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1]
    assert scores(RelaxedAccuracy(), pairs) == expected
    assert RelaxedAccuracy(tolerance=0.1).score("11.8", ["12.5"]) == 1.0


# ---- exact match and option letters -----------------------------------------------------------
@pytest.mark.parametrize(
    "answer, letter",
    [
        ("B", "B"),
        ("B.", "B"),
        ("(B) a cat", "B"),
        ("The answer is B.", "B"),
        ("I think it is (C), not (A)", "A"),  # the last one in parentheses
        ("B, because A is wrong", "A"),  # the last standalone capital, as MMMU reads it
        ("Answer: D) 42", "D"),
        ("b", None),  # lower case is a word, not an option
        ("BC", None),
        ("", None),
    ],
)
def test_choice_letter(answer, letter):
    assert choice_letter(answer) == letter


def test_exact_match_worked_examples():
    pairs = [
        ("Paris.", ["paris"]),
        ("  New   York ", ["new york"]),
        ("STRASSE", ["straße"]),  # case-folded
        ("London", ["paris", "london"]),
        ("Paris is", ["paris"]),
        ("(B) a cat", ["B"]),  # an option reference reads the answer's letter
        ("The answer is B.", ["(B)"]),
        ("It is C", ["B"]),
        ("b", ["B"]),
        ("", ["yes"]),
    ]
    assert scores(ExactMatch(), pairs) == [1, 1, 1, 1, 0, 1, 1, 0, 0, 0]
    as_text = ExactMatch(choices=False)
    assert as_text.score("B.", ["B"]) == 1.0 and as_text.score("(B) a cat", ["B"]) == 0.0


# ---- shared behaviour ---------------------------------------------------------------------------
METRICS = [ANLS, VQAAccuracy, RelaxedAccuracy, ExactMatch]


@pytest.mark.parametrize("metric_class", METRICS)
def test_unanswered_questions_score_zero_and_count(metric_class):
    metric = metric_class()
    metric.update(["yes", None], [["yes"] * 10, ["yes"] * 10])
    assert metric.compute().item() == pytest.approx(0.5)


@pytest.mark.parametrize("metric_class", METRICS)
def test_batches_and_ranks_merge_like_one_pass(metric_class):
    preds = ["2", "two", "yes", "no", "B", "(B)", "12", "13", "abc", "abd", None]
    targets = [["2"] * 10, ["3"] * 10, ["yes"] * 5 + ["no"] * 5, ["no"] * 2 + ["x"] * 8]
    targets += [["B"], ["B"], ["12.5"], ["12.5"], ["abc"], ["abc"], ["abc"]]
    whole = metric_class()
    whole.update(preds, targets)
    rank0, rank1 = metric_class(), metric_class()
    rank0.update(preds[:4], targets[:4])
    rank1.update(preds[4:], targets[4:])
    rank0.merge_state(rank1)  # what the sum reduction does across ranks
    assert rank0.compute().item() == pytest.approx(whole.compute().item())
    answered = [(p, t) for p, t in zip(preds, targets, strict=True) if p is not None]
    expected = sum(metric_class().score(p, t) for p, t in answered) / len(preds)
    assert whole.compute().item() == pytest.approx(expected, abs=1e-6)
    assert whole.compute().ndim == 0


@pytest.mark.parametrize("metric_class", METRICS)
def test_wrong_shapes_are_named(metric_class):
    metric = metric_class()
    name = metric_class.__name__
    with pytest.raises(TypeError, match=f"{name}.update: preds must be a list"):
        metric.update("yes", [["yes"]])
    with pytest.raises(TypeError, match=r"targets\[1\] must be a list .*wrap a single answer"):
        metric.update(["yes", "no"], [["yes"], "no"])
    with pytest.raises(ValueError, match="2 predictions but 1 reference lists"):
        metric.update(["yes", "no"], [["yes"]])
    with pytest.raises(ValueError, match=r"targets\[0\] must hold at least one string"):
        metric.update(["yes"], [[]])
    with pytest.raises(TypeError, match=r"preds\[0\] is <class 'int'>"):
        metric.update([3], [["3"]])
    assert metric.total == 0  # nothing was added


def test_compute_before_update_is_nan():
    with pytest.warns(UserWarning, match="before the ``update`` method"):
        assert torch.isnan(ANLS().compute())


def test_bad_parameters():
    with pytest.raises(ValueError, match="threshold must be in"):
        ANLS(threshold=1.5)
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        RelaxedAccuracy(tolerance=-0.1)
