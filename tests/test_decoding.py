import pytest
import torch
from helpers import tiny_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LogitsProcessorList, PreTrainedTokenizerFast

from mm15_components import MM15Module
from mm15_components.grounding import BoxCodec, BoxLogitsProcessor
from mm15_components.language import build_word_tokenizer

BINS = 8
WORDS = ["Where", "is", "the", "red", "circle", "User", "Assistant"]
INF = float("-inf")


def word_tokenizer(codec: BoxCodec) -> PreTrainedTokenizerFast:
    """Small vocabulary (one token per value 0..BINS-1), so a random model writes boxes often."""
    tokenizer = build_word_tokenizer(WORDS, numbers=codec.bins)
    tokenizer.add_tokens(codec.coordinate_tokens())
    return tokenizer


def tid(tokenizer, text: str) -> int:
    return tokenizer.convert_tokens_to_ids(text)


def coordinate_ids(tokenizer, codec: BoxCodec) -> list[int]:
    names = codec.coordinate_tokens() or [str(v) for v in range(codec.bins)]
    return [tid(tokenizer, name) for name in names]


# ---- construction ----------------------------------------------------------------------------
def test_tokenizer_that_splits_numbers_is_refused():
    digits = Tokenizer(models.WordLevel({str(d): d for d in range(10)} | {"<unk>": 10}, "<unk>"))
    digits.pre_tokenizer = pre_tokenizers.Digits(individual_digits=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=digits, unk_token="<unk>")
    assert tokenizer("123", add_special_tokens=False).input_ids == [1, 2, 3]
    with pytest.raises(ValueError, match="splits numbers into digits.*style='tokens'"):
        BoxLogitsProcessor(tokenizer, BoxCodec(bins=100))
    with pytest.raises(ValueError, match="splits numbers"):
        MM15Module(tiny_model(), build_word_tokenizer(WORDS, numbers=10), constrained_decoding=True)


def test_tokens_style_needs_the_coordinate_tokens():
    with pytest.raises(ValueError, match=r"add codec.coordinate_tokens\(\) to the tokenizer"):
        BoxLogitsProcessor(build_word_tokenizer(WORDS, BINS), BoxCodec(BINS, style="tokens"))


# ---- the state machine on hand-made token sequences ---------------------------------------------
def test_text_style_state_machine():
    codec = BoxCodec(BINS)
    tok = word_tokenizer(codec)
    processor = BoxLogitsProcessor(tok, codec)
    unordered = BoxLogitsProcessor(tok, codec, ordered=False)
    o, c, e, w, pad = (tid(tok, t) for t in ("[", ",", "]", "Where", "<pad>"))
    n = coordinate_ids(tok, codec)

    def allowed(tokens, proc=processor):
        result = proc.allowed_tokens(tokens)
        return None if result is None else result.tolist()

    assert allowed([]) is None
    assert allowed([w, n[3]]) is None  # a number outside a box is free text
    assert allowed([o]) == n
    assert allowed([pad, pad, w, o]) == n  # left padding changes nothing
    assert allowed([o, n[5]]) == [c]
    assert allowed([o, n[5], c]) == n  # y1 is free
    assert allowed([o, n[5], c, n[2], c]) == n[5:]  # x2 >= x1
    assert allowed([o, n[5], c, n[2], c], unordered) == n
    assert allowed([o, n[5], c, n[2], c, n[6], c]) == n[2:]  # y2 >= y1
    assert allowed([o, n[5], c, n[2], c, n[6], c, n[4]]) == [e]
    assert allowed([o, n[5], c, n[2], c, n[6], c, n[4], e]) is None  # closed
    assert allowed([o, n[5], c, n[2], c, n[6], c, n[4], e, o]) == n  # the next box
    assert allowed([o, n[5], w]) is None  # not a box (only unconstrained text writes this)
    assert allowed([o, n[1], c, o, n[2]]) == [c]  # the last "[" is the open box


def test_tokens_style_state_machine():
    codec = BoxCodec(BINS, style="tokens")
    tok = word_tokenizer(codec)
    processor = BoxLogitsProcessor(tok, codec)
    w, pad = tid(tok, "Where"), tid(tok, "<pad>")
    n = coordinate_ids(tok, codec)

    def allowed(tokens):
        result = processor.allowed_tokens(tokens)
        return None if result is None else result.tolist()

    assert allowed([w]) is None
    assert allowed([pad, w, n[6]]) == n  # any coordinate token starts a box
    assert allowed([n[6], n[1]]) == n[6:]
    assert allowed([n[6], n[1], n[7]]) == n[1:]
    assert allowed([n[6], n[1], n[7], n[3]]) is None  # four tokens: done
    assert allowed([w, n[0], n[1], n[7], n[3], n[4], n[4]]) == n[4:]  # second box
    assert allowed([n[0], n[1], n[7], n[3], n[4], n[4], n[5], n[6]]) is None
    assert allowed([n[2], w, n[3]]) == n  # a word ends a run


def test_logits_change_only_inside_boxes():
    codec = BoxCodec(BINS)
    tok = word_tokenizer(codec)
    processor = BoxLogitsProcessor(tok, codec)
    o, c, w = tid(tok, "["), tid(tok, ","), tid(tok, "Where")
    n = coordinate_ids(tok, codec)
    input_ids = torch.tensor([[w, w, w, w], [w, o, n[2], c], [o, n[1], c, n[1]], [w, w, w, o]])
    scores = torch.randn(4, len(tok) + 3)  # the model's vocabulary may be padded
    out = processor(input_ids, scores.clone())
    assert torch.equal(out[0], scores[0])  # outside a box: untouched
    for row, kept in ((1, n), (2, [c]), (3, n)):  # inside: only the grammar's next tokens
        expected = torch.full_like(scores[row], INF)
        expected[kept] = scores[row, kept]
        assert torch.equal(out[row], expected)


# ---- generation with a random model ----------------------------------------------------------
def expected_boxes(ids: list[int], tok, codec: BoxCodec, size: tuple[int, int]):
    """Boxes read from generated ids by the grammar, in pixels (bin centres), and the number
    of ids before an unfinished box at the end (the token budget ran out)."""
    value = {t: v for v, t in enumerate(coordinate_ids(tok, codec))}
    if codec.style == "text":
        pattern = [tid(tok, "[")] + [None, tid(tok, ",")] * 3 + [None, tid(tok, "]")]
    else:
        pattern = [None] * 4
    height, width = size
    boxes, i = [], 0
    while i < len(ids):
        starts = ids[i] == pattern[0] if pattern[0] is not None else ids[i] in value
        if not starts:
            i += 1
            continue
        box = ids[i : i + len(pattern)]
        if len(box) < len(pattern):
            return boxes, i
        for token, slot in zip(box, pattern, strict=True):
            assert token == slot if slot is not None else token in value, (ids, i)
        x1, y1, x2, y2 = (value[t] for t, s in zip(box, pattern, strict=True) if s is None)
        assert x1 <= x2 and y1 <= y2  # ordered=True
        boxes.append(
            (
                (x1 + 0.5) * width / codec.bins,
                (y1 + 0.5) * height / codec.bins,
                (x2 + 0.5) * width / codec.bins,
                (y2 + 0.5) * height / codec.bins,
            )
        )
        i += len(pattern)
    return boxes, len(ids)


def boosted_module(style: str, boost: float) -> tuple[MM15Module, BoxCodec]:
    """A random tiny model whose logits favour starting a box, so boxes are frequent."""
    torch.manual_seed(0)
    codec = BoxCodec(BINS, style=style)
    tok = word_tokenizer(codec)
    module = MM15Module(
        tiny_model(), tok, codec=codec, constrained_decoding=True, max_new_tokens=30
    )
    starts = coordinate_ids(tok, codec) if style == "tokens" else [tid(tok, "[")]
    bias = torch.zeros(len(tok))
    bias[starts] = boost
    head = module.model.language.model.get_output_embeddings()
    head.register_forward_hook(lambda mod, args, out: out + bias)
    return module, codec


def left_padded_prompts(tok, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    words = [tid(tok, w) for w in WORDS]
    lengths = torch.randint(2, 9, (count,), generator=generator).tolist()
    ids = torch.full((count, max(lengths)), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        picks = torch.randint(len(words), (length,), generator=generator)
        ids[row, -length:] = torch.tensor(words)[picks]
        mask[row, -length:] = 1
    return ids, mask


def check_answers(module, codec, new_tokens: torch.Tensor, size=(48, 80)) -> int:
    """Every box emitted parses, into exactly the emitted values; returns the box count."""
    tok, total = module.tokenizer, 0
    for ids in new_tokens.tolist():
        boxes, end = expected_boxes(ids, tok, codec, size)
        # An unfinished box can only be the last one: the budget ran out inside it.
        assert end == len(ids) or len(ids) - end < 9
        text = tok.decode(ids[:end], skip_special_tokens=True)
        assert codec.decode(text, image_size=size) == boxes
        total += len(boxes)
    return total


@pytest.mark.parametrize("style", ["text", "tokens"])
def test_greedy_generation_emits_only_parseable_boxes(style):
    module, codec = boosted_module(style, boost=1.0)
    ids, mask = left_padded_prompts(module.tokenizer, 6)
    answers = module.generate(ids, mask, None)
    new_tokens = module.model.generate(
        ids,
        mask,
        max_new_tokens=module.max_new_tokens,
        do_sample=False,
        pad_token_id=module.tokenizer.pad_token_id,
        eos_token_id=module.tokenizer.eos_token_id,
        logits_processor=LogitsProcessorList([module.box_processor]),
    )
    assert answers == module.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    assert check_answers(module, codec, new_tokens) >= 6


@pytest.mark.parametrize("style", ["text", "tokens"])
def test_sampled_generation_emits_only_parseable_boxes(style):
    module, codec = boosted_module(style, boost=2.0)
    ids, mask = left_padded_prompts(module.tokenizer, 16)
    torch.manual_seed(2)
    new_tokens = module.model.generate(
        ids,
        mask,
        max_new_tokens=40,
        do_sample=True,
        top_k=0,
        pad_token_id=module.tokenizer.pad_token_id,
        eos_token_id=module.tokenizer.eos_token_id,
        logits_processor=LogitsProcessorList([module.box_processor]),
    )
    assert check_answers(module, codec, new_tokens) >= 16


def test_unconstrained_steps_keep_the_model_logits():
    """Through generate: processed scores equal the raw logits wherever no box is open."""
    module, _ = boosted_module("text", boost=1.0)
    tok = module.tokenizer
    ids, mask = left_padded_prompts(tok, 8)
    torch.manual_seed(3)
    out = module.model.generate(
        ids,
        mask,
        max_new_tokens=30,
        do_sample=True,
        top_k=0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        logits_processor=LogitsProcessorList([module.box_processor]),
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
    )
    opening = tid(tok, "[")
    inside = outside = 0  # steps of each kind, over all rows
    for row, tokens in enumerate(out.sequences.tolist()):
        for step, (scores, logits) in enumerate(zip(out.scores, out.logits, strict=True)):
            last_open = max((i for i, t in enumerate(tokens[:step]) if t == opening), default=-1)
            open_box = last_open >= 0 and step - last_open < 9
            if open_box:  # masked, and the allowed tokens keep their logits
                inside += 1
                kept = torch.isfinite(scores[row])
                assert 0 < kept.sum() <= BINS
                assert torch.equal(scores[row][kept], logits[row][kept])
            else:
                outside += 1
                assert torch.equal(scores[row], logits[row])
    assert inside > 0 and outside > 0
