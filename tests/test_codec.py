import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from mm15_components.grounding.codec import BoxCodec

STYLES = ["text", "tokens"]

# On a (height=2000, width=1000) image with 1000 bins a bin is 1 px wide and 2 px tall, so a
# value v decodes (bin centre) to x = v + 0.5 and y = 2 * v + 1: easy to check by hand.
TALL = (2000, 1000)


def box_errors(decoded, original, image_size, bins):
    """Per-coordinate error in bins (x errors over the width, y errors over the height)."""
    height, width = image_size
    sizes = (width, height, width, height)
    return [abs(d - o) * bins / size for d, o, size in zip(decoded, original, sizes, strict=True)]


def assert_inside_and_ordered(box, image_size):
    height, width = image_size
    x1, y1, x2, y2 = box
    assert 0 <= x1 <= x2 <= width
    assert 0 <= y1 <= y2 <= height


@st.composite
def image_box_and_bins(draw):
    height = draw(st.integers(1, 5000))
    width = draw(st.integers(1, 5000))
    bins = draw(st.sampled_from([1000, 1024, 2, 7, 333]) | st.integers(2, 2000))
    finite = {"allow_nan": False, "allow_infinity": False}
    x1, x2 = sorted(draw(st.floats(0, width, **finite)) for _ in range(2))
    y1, y2 = sorted(draw(st.floats(0, height, **finite)) for _ in range(2))
    return (height, width), (x1, y1, x2, y2), bins


@settings(max_examples=300, deadline=None)
@given(case=image_box_and_bins(), style=st.sampled_from(STYLES))
def test_round_trip_within_half_a_bin(case, style):
    image_size, box, bins = case
    codec = BoxCodec(bins=bins, style=style)
    decoded = codec.decode(codec.encode(box, image_size=image_size), image_size=image_size)
    assert len(decoded) == 1
    assert_inside_and_ordered(decoded[0], image_size)
    # Bin-centre decoding: at most half a bin off (the 1-bin bound with room to spare).
    assert max(box_errors(decoded[0], box, image_size, bins)) <= 0.5 + 1e-9


@settings(max_examples=200, deadline=None)
@given(case=image_box_and_bins(), style=st.sampled_from(STYLES))
def test_point_round_trip_within_half_a_bin(case, style):
    image_size, (x, y, _, _), bins = case
    codec = BoxCodec(bins=bins, style=style)
    decoded = codec.decode_points(codec.encode_point((x, y), image_size), image_size)
    assert len(decoded) == 1
    (dx, dy), (height, width) = decoded[0], image_size
    assert 0 <= dx <= width and 0 <= dy <= height
    assert abs(dx - x) * bins / width <= 0.5 + 1e-9
    assert abs(dy - y) * bins / height <= 0.5 + 1e-9


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(1, 5000),
    width=st.integers(1, 5000),
    corners=st.lists(st.integers(0, 5000), min_size=4, max_size=4),
)
def test_encode_matches_exact_integer_floor(height, width, corners):
    # Whole-pixel boxes against exact integer arithmetic: floor(p * 1000 / size), clipped.
    x1, x2 = sorted(min(c, width) for c in corners[0::2])
    y1, y2 = sorted(min(c, height) for c in corners[1::2])
    expected = [
        min(x1 * 1000 // width, 999),
        min(y1 * 1000 // height, 999),
        min(x2 * 1000 // width, 999),
        min(y2 * 1000 // height, 999),
    ]
    box = (x1, y1, x2, y2)
    assert BoxCodec().encode(box, (height, width)) == "[{}, {}, {}, {}]".format(*expected)
    tokens = BoxCodec(style="tokens").encode(box, (height, width))
    assert tokens == "".join(f"<coord_{v}>" for v in expected)


fragments = st.sampled_from(
    [
        "[",
        "]",
        ",",
        ", ",
        " ",
        "-",
        "0",
        "7",
        "999",
        "1000",
        "123456789012",
        "<coord_",
        ">",
        "<coord_5>",
        "a",
        "é",
        "\n",
        "１",
        "[1, 2, 3, 4]",
    ]
)
answers = st.text(max_size=40) | st.lists(fragments | st.text(max_size=3), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    text=answers,
    style=st.sampled_from(STYLES),
    height=st.integers(1, 5000),
    width=st.integers(1, 5000),
)
def test_decode_any_text_gives_valid_boxes_and_points(text, style, height, width):
    codec = BoxCodec(style=style)
    for box in codec.decode(text, (height, width)):
        assert_inside_and_ordered(box, (height, width))
    for x, y in codec.decode_points(text, (height, width)):
        assert 0 <= x <= width and 0 <= y <= height


BOX_1234 = (1.5, 5.0, 3.5, 9.0)
BOX_5678 = (5.5, 13.0, 7.5, 17.0)

TEXT_CORPUS = [
    ("", []),
    ("[", []),
    ("]", []),
    ("[]", []),
    ("[1, 2, 3]", []),
    ("[1, 2, 3, 4, 5]", []),
    ("[a, b, c, d]", []),
    ("[1,2,3,4", []),
    ("1, 2, 3, 4", []),
    ("[1, 2, 3, 4,]", []),
    ("[1.5, 2, 3, 4]", []),
    ("[1 2 3 4]", []),
    ("(1, 2, 3, 4)", []),
    ("[１, ２, ３, ４]", []),  # full-width digits are not ASCII digits
    ("[١, ٢, ٣, ٤]", []),  # nor are Arabic-Indic ones
    ("[1, 2, 3, 4]", [BOX_1234]),
    ("[1,2,3,4]", [BOX_1234]),
    ("[  1 ,2,   3 ,\t4 ]", [BOX_1234]),
    ("[[1, 2, 3, 4]]", [BOX_1234]),
    ("[0001, 2, 3, 0004]", [BOX_1234]),
    ("[[1, 2], [3, 4]]", []),
    ("[1, [5, 6, 7, 8], 9]", [BOX_5678]),
    ("[1, 2, 3, 4] [1, 2, 3]", [BOX_1234]),
    ("box: [1, 2, 3, 4] ünïcødé 🙂 junk ]] [ [5, 6, 7, 8] end", [BOX_1234, BOX_5678]),
    ("[1, 2, 3, 4][5,6,7,8]", [BOX_1234, BOX_5678]),
    # Reversed corners are put in order.
    ("[30, 40, 10, 20]", [(10.5, 41.0, 30.5, 81.0)]),
    # Out-of-range values are clamped to 0..999 like encode clamps.
    ("[-5, 2, 3, 4]", [(0.5, 5.0, 3.5, 9.0)]),
    ("[-0, -2, 3, 4]", [(0.5, 1.0, 3.5, 9.0)]),
    ("[1, 2, 1000, 4]", [(1.5, 5.0, 999.5, 9.0)]),
    ("[1, 2, 99999999999999999999999999999, 4]", [(1.5, 5.0, 999.5, 9.0)]),
    ("[1, 2, 3, " + "9" * 5000 + "]", [(1.5, 5.0, 3.5, 1999.0)]),
]

TOKEN_CORPUS = [
    ("", []),
    ("<coord_1><coord_2><coord_3><coord_4>", [BOX_1234]),
    ("<coord_1> <coord_2>\n<coord_3>  <coord_4>", [BOX_1234]),
    ("The box is <coord_1><coord_2><coord_3><coord_4>.", [BOX_1234]),
    ("<coord_1><coord_2><coord_3>", []),
    ("<coord_1><coord_2><coord_3> the <coord_4>", []),
    ("<coord_1><coord_2><coord_3><coord_4><coord_5>", []),
    (
        "<coord_1><coord_2><coord_3><coord_4><coord_5><coord_6><coord_7><coord_8>",
        [BOX_1234, BOX_5678],
    ),
    (
        "<coord_1><coord_2><coord_3><coord_4> and <coord_5><coord_6><coord_7><coord_8>",
        [BOX_1234, BOX_5678],
    ),
    ("<coord_1><coord_2><coord_3> x <coord_5><coord_6><coord_7><coord_8>", [BOX_5678]),
    ("<coord_30><coord_40><coord_10><coord_20>", [(10.5, 41.0, 30.5, 81.0)]),
    # Only tokens of the vocabulary count; a stray one spoils its run.
    ("<coord_1><coord_2><coord_1000><coord_4>", []),
    ("<coord_1><coord_2><coord_03><coord_4>", []),
    ("<coord_-1><coord_2><coord_3><coord_4>", []),
    ("<coord_a><coord_2><coord_3><coord_4>", []),
    ("<coord_1><coord_2><coord_3><coord_4", []),
    ("<coord_１><coord_2><coord_3><coord_4>", []),
    ("[1, 2, 3, 4]", []),
]


@pytest.mark.parametrize(("text", "expected"), TEXT_CORPUS)
def test_decode_text_corpus(text, expected):
    assert BoxCodec().decode(text, image_size=TALL) == expected


@pytest.mark.parametrize(("text", "expected"), TOKEN_CORPUS)
def test_decode_token_corpus(text, expected):
    assert BoxCodec(style="tokens").decode(text, image_size=TALL) == expected


@pytest.mark.parametrize(
    ("style", "text", "expected"),
    [
        ("text", "[1, 2]", [(1.5, 5.0)]),
        ("text", "click [ 1,2 ] then [3, 4]", [(1.5, 5.0), (3.5, 9.0)]),
        ("text", "[[1, 2], [3, 4]]", [(1.5, 5.0), (3.5, 9.0)]),
        ("text", "[1, 2, 3, 4]", []),
        ("text", "[1]", []),
        ("text", "[-3, 5000]", [(0.5, 1999.0)]),
        ("tokens", "<coord_1><coord_2>", [(1.5, 5.0)]),
        ("tokens", "<coord_1><coord_2><coord_3><coord_4>", [(1.5, 5.0), (3.5, 9.0)]),
        ("tokens", "<coord_1><coord_2><coord_3>", []),
    ],
)
def test_decode_points_corpus(style, text, expected):
    assert BoxCodec(style=style).decode_points(text, image_size=TALL) == expected


def test_encode_hand_computed():
    # 427 x 640 image: x1 = 100 * 1000 / 640 = 156.25, y1 = 200 * 1000 / 427 = 468.4,
    # x2 = 300 * 1000 / 640 = 468.75, y2 = 400 * 1000 / 427 = 936.8; all floored.
    box = (100, 200, 300, 400)
    assert BoxCodec().encode(box, image_size=(427, 640)) == "[156, 468, 468, 936]"
    assert (
        BoxCodec(style="tokens").encode(box, image_size=(427, 640))
        == "<coord_156><coord_468><coord_468><coord_936>"
    )
    # 100 bins: 15.6, 46.8, 46.9, 93.7.
    assert BoxCodec(bins=100).encode(box, image_size=(427, 640)) == "[15, 46, 46, 93]"
    # The image centre is bin 500 on both axes; a tensor point works too.
    assert BoxCodec().encode_point(torch.tensor([320.0, 213.5]), (427, 640)) == "[500, 500]"
    assert BoxCodec(style="tokens").encode_point((0, 427), (427, 640)) == "<coord_0><coord_999>"


def test_encode_clips_to_the_image():
    codec = BoxCodec()
    assert codec.encode((-10, -5, 700, 500), image_size=(427, 640)) == "[0, 0, 999, 999]"
    # Entirely right of the image: a zero-width box on the right edge.
    assert codec.encode((700, 10, 800, 20), image_size=(427, 640)) == "[999, 23, 999, 46]"
    assert codec.encode_point((-1, 1e9), image_size=(427, 640)) == "[0, 999]"


def test_coordinate_tokens():
    assert BoxCodec(bins=4, style="tokens").coordinate_tokens() == [
        "<coord_0>",
        "<coord_1>",
        "<coord_2>",
        "<coord_3>",
    ]
    assert BoxCodec(style="text").coordinate_tokens() == []
    assert len(set(BoxCodec(style="tokens").coordinate_tokens())) == 1000


def test_tokens_survive_a_tokenizer_round_trip():
    # A tokenizer given the coordinate tokens spends exactly four tokens per box, and its
    # decoded text (which may space the tokens apart) decodes to the same box.
    codec = BoxCodec(style="tokens")
    tokenizer = Tokenizer(WordLevel({"[UNK]": 0, "the": 1, "cat": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.add_tokens(codec.coordinate_tokens())
    image_size = (427, 640)
    box = (12.0, 34.0, 567.0, 400.0)
    encoded = codec.encode(box, image_size)
    ids = tokenizer.encode("the cat " + encoded).ids
    assert len(ids) == 2 + 4
    round_tripped = tokenizer.decode(ids)
    assert codec.decode(round_tripped, image_size) == codec.decode(encoded, image_size)


# RefCOCO annotations store [x, y, w, h] in pixels of the original image.
REFCOCO_RECORDS = [
    {"height": 427, "width": 640, "bbox": [103.93, 299.99, 134.22, 77.42]},
    {"height": 640, "width": 427, "bbox": [0.0, 12.5, 426.99, 300.0]},
    {"height": 333, "width": 500, "bbox": [250.5, 0.0, 249.5, 333.0]},
    {"height": 481, "width": 359, "bbox": [10.0, 20.0, 0.0, 5.0]},
    # Annotations can overhang the image by a rounding error: x + w = 500.0 > 499.
    {"height": 375, "width": 499, "bbox": [1.08, 187.69, 498.92, 187.31]},
]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("record", REFCOCO_RECORDS)
def test_refcoco_records_round_trip(record, style):
    x, y, w, h = record["bbox"]
    height, width = image_size = (record["height"], record["width"])
    box = (x, y, x + w, y + h)
    inside = (min(x, width), min(y, height), min(x + w, width), min(y + h, height))
    codec = BoxCodec(style=style)
    decoded = codec.decode(codec.encode(box, image_size), image_size)
    assert len(decoded) == 1
    assert max(box_errors(decoded[0], inside, image_size, codec.bins)) <= 0.5 + 1e-9


def test_refcoco_record_hand_computed():
    # 103.93 * 1000 / 640 = 162.4, 299.99 * 1000 / 427 = 702.6,
    # 238.15 * 1000 / 640 = 372.1, 377.41 * 1000 / 427 = 883.9.
    x, y, w, h = REFCOCO_RECORDS[0]["bbox"]
    assert BoxCodec().encode((x, y, x + w, y + h), (427, 640)) == "[162, 702, 372, 883]"
    # Centres: 162.5 * 0.64 = 104.0, 702.5 * 0.427 = 299.9675, 372.5 * 0.64 = 238.4,
    # 883.5 * 0.427 = 377.2545.
    decoded = BoxCodec().decode("[162, 702, 372, 883]", (427, 640))
    assert decoded == [pytest.approx((104.0, 299.9675, 238.4, 377.2545))]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": 1}, "bins"),
        ({"bins": 1.5}, "bins"),
        ({"bins": True}, "bins"),
        ({"style": "xml"}, "style"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BoxCodec(**kwargs)


@pytest.mark.parametrize("image_size", [(0, 10), (10, -1), (10,), (10, 10, 3), (10.5, 10), None])
@pytest.mark.parametrize("method", ["encode", "decode"])
def test_bad_image_size_raises(image_size, method):
    codec = BoxCodec()
    argument = (1, 2, 3, 4) if method == "encode" else "[1, 2, 3, 4]"
    with pytest.raises(ValueError, match="image"):
        getattr(codec, method)(argument, image_size)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((1, 2, 3), "4 coordinates"),
        ("1234", "4 coordinates"),
        ((1, 2, math.nan, 4), "finite"),
        ((1, 2, math.inf, 4), "finite"),
        ((1, "2", 3, 4), "finite"),
        ((5, 2, 3, 4), "x1 <= x2"),
        ((1, 5, 3, 4), "x1 <= x2"),
    ],
)
def test_encode_rejects_bad_boxes(box, message):
    with pytest.raises(ValueError, match=message):
        BoxCodec().encode(box, (100, 100))


def test_encode_point_rejects_bad_points():
    with pytest.raises(ValueError, match="2 coordinates"):
        BoxCodec().encode_point((1, 2, 3), (100, 100))


def test_decode_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        BoxCodec().decode(b"[1, 2, 3, 4]", (100, 100))
