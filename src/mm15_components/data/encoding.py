"""How a data module turns samples into model inputs, and what of it must agree with the model.

Every data module takes an ``encoding:`` group (:class:`Encoding`): the tokenizer, the box
codec, the image geometry (tile size, tokens per image, mean, std), the splitter and the tile
indicators. It builds the module's ``SampleEncoder`` s, and ``adopt`` fills the geometry the
recipe left unset from the model (configuration flows one way, model -> data).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerBase

from mm15_components.data.collate import SampleEncoder
from mm15_components.data.schema import Box
from mm15_components.data.synthetic.dataset import vocabulary
from mm15_components.grounding.codec import BoxCodec
from mm15_components.language.chat import ChatTemplate, ConversationTemplate
from mm15_components.language.tokenizer import build_word_tokenizer, load_tokenizer
from mm15_components.vision.anyres import AnyResSplitter, IndicatorStyle
from mm15_components.vision.encoder import CLIP_MEAN, CLIP_STD

if TYPE_CHECKING:
    from mm15_components.model import MM15Model

STANDALONE_GEOMETRY: dict[str, Any] = {
    "image_size": 64,
    "image_tokens": 16,
    "mean": CLIP_MEAN,
    "std": CLIP_STD,
}
"""What an encoding uses for a value it was not given while no model is attached (a script
or a test reading samples); under a trainer the model's values replace them."""


@dataclass(frozen=True)
class Encoding:
    """The ``encoding:`` group of a data module's arguments.

    Args:
        tokenizer: a pretrained tokenizer name or path; None builds the word-level tokenizer of
            the data's vocabulary locally (one token per word, per number below the codec's
            bins and per coordinate token of the codec's ``tokens`` style).
        codec: writes the answer boxes (default: Ferret's text style, 1000 bins); the CLI hands
            it to the model, which reads answers with it.
        image_size: the encoder's input (tile) size; None takes the model's.
        image_tokens: LLM tokens per image (per tile when splitting); None takes the model's
            ``tokens_per_image``.
        mean / std: image normalisation; None takes the encoder's.
        splitter: split each image into tiles plus an overview (MM1.5's AnyRes); its
            ``tile_size`` must be the encoder's input size. None: one square per image.
        tile_indicators: text before each tile's tokens: ``none``, ``index`` or ``seps``.
        use_tokenizer_template: write conversations in the tokenizer's chat template when it
            has one; False: the plain ``ChatTemplate``.
    """

    tokenizer: str | None = None
    codec: BoxCodec | None = None
    image_size: int | None = None
    image_tokens: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    splitter: AnyResSplitter | None = None
    tile_indicators: IndicatorStyle = "none"
    use_tokenizer_template: bool = True

    @property
    def box_codec(self) -> BoxCodec:
        """``codec``, or the default one."""
        return self.codec or BoxCodec()

    def build_tokenizer(self, extra_words: Iterable[str] = ()) -> PreTrainedTokenizerBase:
        """``data_tokenizer`` of this encoding's tokenizer and codec."""
        return data_tokenizer(self.tokenizer, self.box_codec, extra_words)

    def geometry(self, key: str) -> Any:
        """The value of ``image_size``, ``image_tokens``, ``mean`` or ``std``: the given one,
        else the standalone one (``STANDALONE_GEOMETRY``)."""
        value = getattr(self, key)
        return STANDALONE_GEOMETRY[key] if value is None else value

    def adopt(self, model: MM15Model) -> Encoding:
        """This encoding with the model's image size, tokens per image, mean and std where it
        was given none; raises, naming both keys and values, where a given one disagrees (the
        splitter's tile size, mean and std included)."""
        vision = model.vision
        wanted = {
            "image_size": (vision.image_size, "vision.image_size (the encoder's input size)"),
            "image_tokens": (model.tokens_per_image, "tokens_per_image (the connector's)"),
            "mean": (tuple(vision.mean), "vision.mean"),
            "std": (tuple(vision.std), "vision.std"),
        }
        adopted = {}
        for key, (value, where) in wanted.items():
            stated = getattr(self, key)
            if stated is None:
                adopted[key] = value
            elif not _same(stated, value):
                raise ValueError(
                    f"data.init_args.encoding.{key}={_show(stated)} disagrees with the model's "
                    f"{where}={_show(value)}; make them equal, or leave the data's unset to "
                    "take the model's"
                )
        if self.splitter is not None:
            for key, name in (("tile_size", "image_size"), ("mean", "mean"), ("std", "std")):
                value, where = wanted[name]
                stated = getattr(self.splitter, key)
                if not _same(stated, value):
                    raise ValueError(
                        f"data.init_args.encoding.splitter.init_args.{key}={_show(stated)} "
                        f"disagrees with the model's {where}={_show(value)}; make them equal"
                    )
        return replace(self, **adopted)

    def encoder(
        self,
        tokenizer: PreTrainedTokenizerBase,
        template: ConversationTemplate | None = None,
        baseline_box: Box | None = None,
    ) -> SampleEncoder:
        """A ``SampleEncoder`` of this geometry; ``template`` None: the tokenizer's chat
        template or the plain one, as ``use_tokenizer_template`` says."""
        if template is None and not self.use_tokenizer_template:
            template = ChatTemplate()
        return SampleEncoder(
            tokenizer,
            self.geometry("image_size"),
            self.geometry("image_tokens"),
            self.geometry("mean"),
            self.geometry("std"),
            template=template,
            splitter=self.splitter,
            tile_indicators=self.tile_indicators,
            baseline_box=baseline_box,
        )


def data_tokenizer(
    name: str | None, codec: BoxCodec, extra_words: Iterable[str] = ()
) -> PreTrainedTokenizerBase:
    """The pretrained tokenizer ``name`` or, when None, the word tokenizer of the synthetic
    vocabulary and ``extra_words``; either way with ``codec``'s coordinate tokens."""
    if name:
        return load_tokenizer(name, codec.coordinate_tokens())
    words = vocabulary() | set(extra_words)
    return build_word_tokenizer(words, codec.bins, codec.coordinate_tokens())


class ModelGeometry:
    """What a data module reads of its ``encoding``: ``image_size``, ``image_tokens``,
    ``mean``, ``std`` (given, adopted or standalone), the ``splitter``, ``tile_indicators`` and
    ``codec``; and ``adopt_geometry``, which ``setup`` calls with the trainer's model and
    scripts call with theirs."""

    encoding: Encoding

    @property
    def image_size(self) -> int:
        return self.encoding.geometry("image_size")

    @property
    def image_tokens(self) -> int:
        return self.encoding.geometry("image_tokens")

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.encoding.geometry("mean"))

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.encoding.geometry("std"))

    @property
    def splitter(self) -> AnyResSplitter | None:
        return self.encoding.splitter

    @property
    def tile_indicators(self) -> IndicatorStyle:
        return self.encoding.tile_indicators

    @property
    def use_tokenizer_template(self) -> bool:
        return self.encoding.use_tokenizer_template

    def adopt_geometry(self, model: MM15Model) -> None:
        """Take the model's geometry where the encoding gave none (``Encoding.adopt``)."""
        self.encoding = self.encoding.adopt(model)

    def _adopt_trainer_geometry(self) -> None:
        """``adopt_geometry`` of the trainer's model, when there is one."""
        trainer = getattr(self, "trainer", None)
        model = getattr(getattr(trainer, "lightning_module", None), "model", None)
        if model is not None and hasattr(model, "tokens_per_image"):
            self.adopt_geometry(model)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))
    return a == b


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, (tuple, list)) else str(value)
