"""Tiny builders shared by the tests, and a callback that records a run."""

import json
import resource
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from PIL import Image

from mm15_components import MM15Model, MM15Module
from mm15_components.connectors import MLPProjector
from mm15_components.data import ConversationDataModule, Encoding, Mixture, Source
from mm15_components.data.prompt import question_turn
from mm15_components.language import CausalLM, build_word_tokenizer
from mm15_components.vision import OpenCLIPVisionEncoder

TINY_LLAMA = dict(
    model_type="llama",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=True,
)


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML template, the shape of Qwen's, for tokenizers built in the tests."""


def build_chatml_tokenizer(words):
    """A word-level tokenizer of ``words`` with its own ChatML chat template."""
    tokenizer = build_word_tokenizer([*words, "user", "assistant"])
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.chat_template = CHATML
    return tokenizer


def training_turn(folder: Path, question: str, tokenizer: str, **encoding) -> tuple:
    """A green image and the encoded training sample of one conversation asking ``question``
    about it (``folder`` holds its files): what a prompt at inference must reproduce.
    ``encoding``: more ``Encoding`` settings of the data."""
    image = Image.new("RGB", (64, 48), (10, 200, 30))
    image.save(folder / "train.png")
    turns = [
        {"from": "human", "value": question_turn(question).content},
        {"from": "gpt", "value": "[100, 200, 300, 400]"},
    ]
    record = {"id": "r0", "image": "train.png", "conversations": turns}
    (folder / "sft.json").write_text(json.dumps([record]))
    mixture = Mixture([Source("refer_ground", path=str(folder / "sft.json"))])
    data = ConversationDataModule(
        mixture, val_samples=1, encoding=Encoding(tokenizer=tokenizer, **encoding)
    )
    data.setup("validate")
    return image, data.val_set[0]


def tiny_model(pool: int = 2) -> MM15Model:
    return MM15Model(
        OpenCLIPVisionEncoder("mm15-tiny-vit"),
        CausalLM(config=TINY_LLAMA),
        lambda i, o: MLPProjector(i, o, pool=pool),
    )


def tiny_module(words=("Where", "is", "the", "red", "circle", "User", "Assistant")) -> MM15Module:
    return MM15Module(tiny_model(), build_word_tokenizer(words))


class RunRecord(Callback):
    """Writes each rank's training losses, peak resident memory, weight dtypes and the data's
    image geometry to ``DIR/rank<k>.json`` when training ends (``--trainer.callbacks`` of a
    CLI run)."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))

    def on_train_end(self, trainer, module) -> None:
        record = {
            "losses": self.losses,
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "weight_dtypes": sorted({str(p.dtype) for p in module.parameters()}),
            "data_geometry": [trainer.datamodule.image_size, trainer.datamodule.image_tokens],
        }
        path = self.directory / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record))
