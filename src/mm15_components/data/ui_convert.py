"""Mobile-UI annotations -> the project's conversation records (``formats`` ``conversation``
schema), boxes written by a ``BoxCodec``.

Two layouts are read:

- **Ferret-UI** (apple/ml-ferret, ``ferretui/``): a ``.json`` list of ``{"id", "image",
  "image_w", "image_h", "conversations": [{"from", "value"}], "box_x1y1x2y2": [[box, ...]
  per message]}``; a message names its ``j``-th box as ``<bbox_location{j}>`` (pixels of the
  screenshot). Each placeholder becomes the codec's text for the box.
- **Rico-style view hierarchies**: one ``.json`` per screen, the tree under
  ``activity.root`` (Rico's view hierarchies, Android ``class`` names) or at the top level
  (Rico's semantic annotations, ``componentLabel``); every node has ``bounds`` ``[x1, y1,
  x2, y2]`` and ``children``. Nodes of known classes become elements of a screen, asked about
  with the synthetic screens' questions (``screen_tasks.ScreenAsker``).

Bad input never stops a conversion: a box reaching outside the screen is clamped to it (and
counted), a box with nothing left inside it, an unknown widget class, a missing placeholder
box or a malformed record is skipped, counted by reason and listed with its file and index
(``Conversion``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm15_components.data.formats import load_json
from mm15_components.data.synthetic.screen_tasks import ScreenAsker
from mm15_components.data.synthetic.screens import Element, Screen, Theme
from mm15_components.grounding.codec import BoxCodec
from mm15_components.language.tokenizer import IMAGE_TOKEN

FERRET_UI_CLASSES = {
    "button": "button",
    "text": "text",
    "icon": "icon",
    "picture": "picture",
    "checkbox": "checkbox",
    "toggle": "toggle",
    "switch": "toggle",
    "textfield": "textfield",
    "text field": "textfield",
    "slider": "slider",
    "pagecontrol": "pagecontrol",
    "segmentedcontrol": "segmentedcontrol",
    "tab": "tab",
    "container": "container",
    "dialog": "dialog",
}
"""Widget class names of Ferret-UI answers (case-insensitive) -> the class written."""

RICO_CLASSES = {
    # semantic annotations (componentLabel)
    "text button": "button",
    "icon": "icon",
    "input": "textfield",
    "on/off switch": "toggle",
    "checkbox": "checkbox",
    "slider": "slider",
    "text": "text",
    "list item": "listitem",
    "card": "card",
    "image": "picture",
    # view hierarchies (the last part of the Android class name)
    "button": "button",
    "imagebutton": "icon",
    "edittext": "textfield",
    "switch": "toggle",
    "togglebutton": "toggle",
    "switchcompat": "toggle",
    "appcompatcheckbox": "checkbox",
    "seekbar": "slider",
    "textview": "text",
    "appcompattextview": "text",
    "imageview": "picture",
}
"""Rico class names (case-insensitive) -> element classes; other nodes (layouts) are not
elements."""

WIDGET_QUESTION = re.compile(r"\b(ui|widget|element) type\b|\bkind of (element|widget)\b", re.I)
"""A Ferret-UI question asking for a widget's class (its answer must be a known class)."""
PLACEHOLDER = re.compile(r"<bbox_location(\d+)>")
RICO_SIZE = (1440, 2560)
NEUTRAL = Theme("unknown", (255, 255, 255), (255, 255, 255), (0, 0, 0), (0, 0, 0), (0, 0, 0))


@dataclass
class Conversion:
    """Converted records, how many boxes were clamped, and what was skipped: counts by
    reason and one ``"<file> <index>: <reason>: <detail>"`` line per skip."""

    records: list[dict[str, Any]] = field(default_factory=list)
    clamped: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def skip(self, where: str, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        self.problems.append(f"{where}: {reason}: {detail}")

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return (
            f"{len(self.records)} records, {self.clamped} boxes clamped to the screen, "
            f"{sum(self.skipped.values())} skipped" + (f" ({reasons})" if reasons else "")
        )


class _Skip(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def clamp_box(box: Any, width: int, height: int) -> tuple[tuple[int, int, int, int], bool]:
    """``box`` cut to the screen, and whether it had to be; raises ``_Skip`` for a box that is
    not four numbers in order or has no area left on the screen."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise _Skip("malformed_box", f"a box must be [x1, y1, x2, y2], got {box!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
        raise _Skip("malformed_box", f"a box must hold numbers, got {box!r}")
    x1, y1, x2, y2 = box
    if x2 < x1 or y2 < y1:
        raise _Skip("malformed_box", f"box {list(box)} has x2 < x1 or y2 < y1")
    inside = (
        int(min(max(x1, 0), width)),
        int(min(max(y1, 0), height)),
        int(min(max(x2, 0), width)),
        int(min(max(y2, 0), height)),
    )
    if inside[2] <= inside[0] or inside[3] <= inside[1]:
        raise _Skip(
            "box_outside_screen", f"box {list(box)} lies outside the {width}x{height} screen"
        )
    return inside, inside != tuple(int(v) for v in box) or any(v != int(v) for v in box)


def convert_ferret_ui(
    path: str | Path, codec: BoxCodec, classes: dict[str, str] | None = None
) -> Conversion:
    """Ferret-UI's JSON records as conversation records (see the module docstring)."""
    path = Path(path)
    classes = {k.casefold(): v for k, v in (classes or FERRET_UI_CLASSES).items()}
    result = Conversion()
    data = load_json(path.read_text(), str(path))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for index, record in enumerate(data):
        where = f"{path} record {index}"
        try:
            result.records.append(_ferret_record(record, codec, classes, result))
        except _Skip as skip:
            result.skip(where, skip.reason, str(skip))
    return result


def _ferret_record(
    record: Any, codec: BoxCodec, classes: dict[str, str], result: Conversion
) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise _Skip("malformed_record", "a record must be a JSON object")
    image, width, height = record.get("image"), record.get("image_w"), record.get("image_h")
    if not isinstance(image, str) or not image:
        raise _Skip("malformed_record", "'image' must be a non-empty string")
    if not all(isinstance(v, int) and v > 0 for v in (width, height)):
        raise _Skip("malformed_record", "'image_w', 'image_h' must be positive integers")
    messages = record.get("conversations")
    if not isinstance(messages, list) or not messages:
        raise _Skip("malformed_record", "'conversations' must be a non-empty list")
    boxes = record.get("box_x1y1x2y2") or [[] for _ in messages]
    if not isinstance(boxes, list) or len(boxes) != len(messages):
        raise _Skip("malformed_record", "'box_x1y1x2y2' needs one list of boxes per message")
    conversations = []
    for number, (message, message_boxes) in enumerate(zip(messages, boxes, strict=True)):
        if not isinstance(message, dict) or not isinstance(message.get("value"), str):
            raise _Skip("malformed_record", f"message {number} needs a string 'value'")
        if message.get("from") not in ("human", "gpt"):
            raise _Skip("malformed_record", f"message {number}: 'from' must be human or gpt")

        def write_box(match: re.Match, message_boxes=message_boxes, number=number) -> str:
            k = int(match.group(1))
            if not isinstance(message_boxes, list) or k >= len(message_boxes):
                raise _Skip("missing_box", f"message {number} names box {k}, which is not given")
            box, clamped = clamp_box(message_boxes[k], width, height)
            result.clamped += clamped
            return codec.encode(box, (height, width))

        value = PLACEHOLDER.sub(write_box, message["value"])
        if (
            message["from"] == "gpt"
            and number
            and WIDGET_QUESTION.search(messages[number - 1]["value"])
        ):
            name = value.strip().rstrip(".").casefold()
            if name not in classes:
                raise _Skip("unknown_class", f"widget class {value!r} is not in the class map")
            value = classes[name]
        conversations.append({"from": message["from"], "value": value})
    if messages[-1].get("from") != "gpt":
        raise _Skip("malformed_record", "the conversation must end with a 'gpt' message")
    if sum(m["value"].count(IMAGE_TOKEN) for m in conversations) != 1:
        raise _Skip("malformed_record", f"the conversation needs exactly one {IMAGE_TOKEN}")
    return {"id": str(record.get("id", "")), "image": image, "conversations": conversations}


def rico_elements(
    tree: Any, where: str, result: Conversion, screen_size: tuple[int, int] = RICO_SIZE
) -> list[Element]:
    """The elements of a Rico-style tree: nodes of ``RICO_CLASSES``, boxes clamped to the
    screen; other nodes (layouts) are counted as ``unmapped_class`` and not listed."""
    root = tree.get("activity", {}).get("root", tree) if isinstance(tree, dict) else tree
    width, height = screen_size
    elements, stack = [], [(root, "root")]
    while stack:
        node, at = stack.pop()
        if not isinstance(node, dict):
            result.skip(f"{where} {at}", "malformed_record", "a node must be a JSON object")
            continue
        children = node.get("children") or []
        stack += [(child, f"{at}.{k}") for k, child in reversed(list(enumerate(children)))]
        label = node.get("componentLabel") or str(node.get("class", "")).rsplit(".", 1)[-1]
        kind = RICO_CLASSES.get(label.casefold())
        if kind is None:
            result.skipped["unmapped_class"] += 1
            continue
        if node.get("visible-to-user") is False:
            result.skipped["invisible"] += 1
            continue
        try:
            box, clamped = clamp_box(node.get("bounds"), width, height)
        except _Skip as skip:
            result.skip(f"{where} {at}", skip.reason, str(skip))
            continue
        result.clamped += clamped
        text = node.get("text") or ""
        elements.append(Element(kind, box, text if isinstance(text, str) else ""))
    return elements


def convert_rico(
    paths: Iterable[str | Path],
    codec: BoxCodec,
    tasks: tuple[str, ...] = ("widget", "ocr", "find_text", "find_widget"),
    questions: int = 3,
    seed: int = 0,
    screen_size: tuple[int, int] = RICO_SIZE,
    points: float = 0.3,
) -> Conversion:
    """One conversation per view-hierarchy file (its screenshot: the same name, ``.jpg``) of
    up to ``questions`` questions drawn from ``tasks``, each about a different element."""
    result = Conversion()
    asker = ScreenAsker(codec.encode, codec.encode_point, points)
    uniform = np.full(len(tasks), 1 / len(tasks))
    for index, path in enumerate(map(Path, paths)):
        where = str(path)
        try:
            tree = load_json(path.read_text(), where)
        except ValueError as error:
            result.skip(where, "malformed_json", str(error))
            continue
        elements = rico_elements(tree, where, result, screen_size)
        screen = Screen(*screen_size, "rico", NEUTRAL, "", tuple(elements))
        rng = np.random.default_rng([seed, index])
        asked = asker.ask_many(rng, screen, list(tasks), uniform, questions)
        if not asked:
            result.skip(where, "nothing_to_ask", f"no element of a known class for {tasks}")
            continue
        conversations = []
        for number, q in enumerate(asked):
            text = f"{q.question}\n{IMAGE_TOKEN}" if number == 0 else q.question
            conversations += [{"from": "human", "value": text}, {"from": "gpt", "value": q.answer}]
        result.records.append(
            {
                "id": path.stem,
                "image": path.with_suffix(".jpg").name,
                "conversations": conversations,
            }
        )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mm15_components.data.ui_convert",
        description="Convert Ferret-UI JSON or Rico view hierarchies to conversation JSONL.",
    )
    parser.add_argument("layout", choices=("ferret-ui", "rico"))
    parser.add_argument("inputs", nargs="+", help="a Ferret-UI .json file, or Rico .json files")
    parser.add_argument("--output", required=True, help="the .jsonl file to write")
    parser.add_argument("--problems", help="also write every skipped record, one per line")
    args = parser.parse_args(argv)
    codec = BoxCodec()
    if args.layout == "ferret-ui":
        result = Conversion()
        for path in args.inputs:
            part = convert_ferret_ui(path, codec)
            result.records += part.records
            result.clamped += part.clamped
            result.skipped += part.skipped
            result.problems += part.problems
    else:
        result = convert_rico(args.inputs, codec)
    with open(args.output, "w") as out:
        out.writelines(json.dumps(record) + "\n" for record in result.records)
    if args.problems:
        Path(args.problems).write_text("".join(line + "\n" for line in result.problems))
    print(result.summary())


if __name__ == "__main__":
    main()
