import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mm15_components.grounding.codec import BoxCodec
from mm15_components.grounding.embeddings import coordinate_token_ids, init_sinusoidal
from mm15_components.language import build_word_tokenizer


def test_coordinate_ids_follow_bin_values():
    tokenizer = build_word_tokenizer([], numbers=100)
    ids = coordinate_token_ids(tokenizer, BoxCodec(bins=100))
    assert tokenizer.convert_ids_to_tokens(ids) == [str(v) for v in range(100)]


def test_no_coordinate_ids_when_numbers_are_split():
    digits = {str(d): d for d in range(10)} | {"<unk>": 10}
    core = Tokenizer(models.WordLevel(digits, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Digits(individual_digits=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    assert coordinate_token_ids(tokenizer, BoxCodec(bins=1000)) is None


def test_sinusoidal_rows_are_closer_for_nearer_bins():
    weight = torch.randn(300, 64) * 0.02
    others = weight[200:].clone()
    mean_norm = float(weight.norm(dim=1).mean())
    ids = list(range(200))[::-1]  # any id order: row ids[v] encodes value v
    init_sinusoidal(weight, ids)
    rows = weight[torch.tensor(ids)]
    torch.testing.assert_close(weight[200:], others)  # other rows untouched
    torch.testing.assert_close(rows.norm(dim=1), torch.full((200,), mean_norm))
    gram = rows @ rows.T
    # similarity depends on the distance only, and falls with it over the first bins
    torch.testing.assert_close(gram[10, 13], gram[50, 53], rtol=1e-4, atol=1e-6)
    assert gram[100, 100] > gram[100, 101] > gram[100, 102] > gram[100, 104]
