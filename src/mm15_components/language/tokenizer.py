"""Tokenizers: a pretrained one by name or path, or a word-level one built locally."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

IMAGE_TOKEN = "<image>"
"""Placeholder for one image in conversation text; expanded to one token per image feature."""

PUNCTUATION = list("[](),.:;?!'\"-/<>")


def build_word_tokenizer(
    words: Iterable[str], numbers: int = 1000, extra_tokens: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is ``words``, punctuation and ``0..numbers-1``,
    plus ``extra_tokens`` that are never split (e.g. ``<coord_k>``).

    Every integer below ``numbers`` is one token, so a Ferret box ``[x1, y1, x2, y2]`` costs one
    token per coordinate: a tiny model learns to localise far sooner than with digit tokens.
    Built in memory from ``tokenizers``: nothing is downloaded.
    """
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab_list = specials + [str(i) for i in range(numbers)] + PUNCTUATION
    vocab_list += sorted(set(words) - set(vocab_list))
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab_list)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    tokenizer.add_tokens(list(extra_tokens))
    return add_image_token(tokenizer)


def load_tokenizer(name_or_path: str, extra_tokens: Iterable[str] = ()) -> PreTrainedTokenizerBase:
    """A pretrained tokenizer (hub name or local directory) with the image token and
    ``extra_tokens`` added."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load tokenizer {name_or_path!r}: {error}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.add_tokens(list(extra_tokens))
    return add_image_token(tokenizer)


def add_image_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Register ``<image>`` as a special token so it is never split."""
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer
