from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mm15_components.data.formats import BadSampleError, BadSamplePolicy
from mm15_components.data.mixture import Mixture, MixtureDataset, Source

RECIPES = Path(__file__).parents[1] / "recipes"
# MM1.5's SFT mixture as the paper states the effective shares (MM15_FACTS section 4)
SFT_SHARES = {
    "text_rich": 0.372,
    "refer_ground": 0.225,
    "general": 0.113,
    "math": 0.056,
    "code": 0.023,
    "science": 0.011,
    "multi_image": 0.10,
    "text_only": 0.10,
}


def recipe_mixture(name: str) -> Mixture:
    train = yaml.safe_load((RECIPES / name).read_text())["data"]["init_args"]["train"]
    return Mixture(**{**train, "sources": [Source(**s) for s in train["sources"]]})


def realised_counts(mixture: Mixture, draws: int, seed: int) -> dict[str, int]:
    categories = [s.category for s in mixture.sources]
    dataset = MixtureDataset(
        [range(7)] * len(categories), categories, mixture.probabilities(), draws, seed
    )
    counts = dict.fromkeys(mixture.category_shares(), 0)
    for index in range(draws):
        counts[categories[dataset.draw(index)[0]]] += 1
    return counts


def chi_square_p(counts: dict[str, int], shares: dict[str, float]) -> float:
    """p-value of Pearson's chi-square test of ``counts`` against ``shares``."""
    observed = np.array([counts[c] for c in shares], dtype=float)
    expected = np.array(list(shares.values())) / sum(shares.values()) * observed.sum()
    statistic = float(((observed - expected) ** 2 / expected).sum())
    df = len(shares) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2), torch.tensor(statistic / 2)))


def test_sft_recipe_expresses_the_papers_shares():
    shares = recipe_mixture("sft.yaml").category_shares()
    assert shares.keys() == SFT_SHARES.keys()
    for category, share in SFT_SHARES.items():
        assert shares[category] == pytest.approx(share, abs=6e-4), category


def test_pretrain_recipe_is_50_10_40():
    shares = recipe_mixture("pretrain.yaml").category_shares()
    assert shares == pytest.approx({"caption": 0.5, "interleaved": 0.1, "text": 0.4})


def test_weights_multiply_group_category_and_source():
    mixture = Mixture(
        [
            Source("a", group="g1", weight=1.0),
            Source("a", group="g1", weight=3.0),
            Source("b", group="g1"),
            Source("c", group="g2"),
        ],
        groups={"g1": 3.0, "g2": 1.0},
        categories={"a": 1.0, "b": 4.0},
    )
    # g1 = 3/4; a = 1/5 of g1, split 1:3; b = 4/5 of g1; c = all of g2 = 1/4
    expected = [0.75 * 0.2 * 0.25, 0.75 * 0.2 * 0.75, 0.75 * 0.8, 0.25]
    assert mixture.probabilities() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("mixture", "message"),
    [
        (Mixture([Source("a", weight=-1.0)]), ">= 0"),
        (Mixture([Source("a")], categories={"typo": 1.0}), "which no source has"),
        (Mixture([Source("a")], groups={"typo": 1.0}), "which no source has"),
        (Mixture([Source("a", group="x"), Source("a", group="y")]), "two groups"),
        (Mixture([Source("a")], categories={"a": 0.0}), "probability 0"),
        (Mixture([]), "at least one source"),
    ],
)
def test_bad_mixtures_are_named(mixture, message):
    with pytest.raises(ValueError, match=message):
        mixture.probabilities()


def test_weights_left_from_replaced_sources_say_what_to_pass():
    """A recipe's group and category weights, kept when its sources are replaced on the
    command line, are named with the two flags that reset them."""
    from mm15_components.data.conversation import ConversationDataModule

    stale = Mixture([Source("mine")], groups={"single_image": 0.8}, categories={"code": 0.2})
    expected = (
        r"data\.init_args\.train: weights for groups \['single_image'\] and categories "
        r"\['code'\], which no source has \(the sources have groups \['all'\], categories "
        r"\['mine'\]\); .* --data\.init_args\.train\.groups=\{\} "
        r"--data\.init_args\.train\.categories=\{\}"
    )
    with pytest.raises(ValueError, match=expected):
        ConversationDataModule(train=stale, val=Mixture([Source("general")]))


@pytest.mark.parametrize("recipe", ["sft.yaml", "pretrain.yaml"])
def test_realised_shares_match_the_target_and_reject_a_wrong_one(recipe):
    mixture = recipe_mixture(recipe)
    target = mixture.category_shares()
    counts = realised_counts(mixture, 4000, seed=0)
    assert chi_square_p(counts, target) > 1e-3
    # a wrong target: the two largest categories' shares swapped, or MM1's 45 : 45 : 10
    if recipe == "sft.yaml":
        wrong = {**target, "text_rich": target["refer_ground"], "refer_ground": target["text_rich"]}
    else:
        wrong = {"caption": 0.45, "interleaved": 0.45, "text": 0.10}
    assert chi_square_p(counts, wrong) < 1e-6


def test_draws_are_deterministic_by_seed_and_index():
    mixture = recipe_mixture("sft.yaml")
    first = realised_counts(mixture, 300, seed=1)
    assert realised_counts(mixture, 300, seed=1) == first
    sources = [range(50)] * len(mixture.sources)
    a = MixtureDataset(sources, ["x"] * len(sources), mixture.probabilities(), 100, seed=1)
    b = MixtureDataset(sources, ["x"] * len(sources), mixture.probabilities(), 100, seed=2)
    draws = [a.draw(i) for i in range(100)]
    assert draws == [a.draw(i) for i in reversed(range(100))][::-1]  # order-free
    assert draws != [b.draw(i) for i in range(100)]


class EveryThirdBad:
    def __len__(self):
        return 9

    def __getitem__(self, index):
        if index % 3 == 0:
            raise BadSampleError("missing_file", f"file:{index + 1}: gone")
        return {"index": index}


def test_bad_samples_are_replaced_by_the_next_one_and_counted():
    policy = BadSamplePolicy("skip", max_bad_fraction=0.5)  # a third are bad
    dataset = MixtureDataset([EveryThirdBad()], ["c"], np.ones(1), 60, seed=0, policy=policy)
    with pytest.warns(UserWarning, match="missing_file"):
        items = [dataset[i] for i in range(60)]
    for index, item in enumerate(items):
        drawn = dataset.draw(index)[1]
        assert item["skipped"] == (drawn % 3 == 0)
        assert item["index"] == drawn + item["skipped"]
    assert policy.counts["missing_file"] == sum(item["skipped"] for item in items) > 0
    strict = MixtureDataset([EveryThirdBad()], ["c"], np.ones(1), 60, seed=0)
    bad = next(i for i in range(60) if strict.draw(i)[1] % 3 == 0)
    with pytest.raises(BadSampleError, match=r"file:\d+: gone"):
        strict[bad]
