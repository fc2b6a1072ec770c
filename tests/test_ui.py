"""Synthetic phone screens, their questions, the Ferret-UI / Rico converter and UI metrics."""

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageDraw

from mm15_components.data import UIDataModule, ui_convert
from mm15_components.data.synthetic.screen_tasks import TASKS, ScreenDataset, describe
from mm15_components.data.synthetic.screens import (
    BARS,
    DEVICES,
    DRAWERS,
    WIDGETS,
    draw_screen,
    sample_screen,
)
from mm15_components.data.ui_convert import convert_ferret_ui, convert_rico
from mm15_components.grounding.codec import BoxCodec
from mm15_components.metrics import VALIDATION_METRICS, ReferringAccuracy, TaperceptionF1

CODEC = BoxCodec()


def screens(count=40, width=160, **layout):
    return [sample_screen(np.random.default_rng(seed), width, **layout) for seed in range(count)]


def test_screens_are_deterministic_per_seed():
    a, b = (sample_screen(np.random.default_rng(7), 160) for _ in range(2))
    assert a == b
    assert np.array_equal(np.asarray(draw_screen(a)), np.asarray(draw_screen(b)))
    assert a != sample_screen(np.random.default_rng(8), 160)


def test_screens_are_portrait_phones_with_every_class():
    seen = Counter()
    for screen in screens(60):
        native_w, native_h = DEVICES[screen.device]
        assert screen.height == round(screen.width * native_h / native_w)
        for e in screen.elements:
            x1, y1, x2, y2 = e.box
            assert 0 <= x1 < x2 <= screen.width and 0 <= y1 < y2 <= screen.height, e
        seen.update(e.kind for e in screen.elements)
    assert set(seen) == set(WIDGETS) | set(BARS)


def test_content_elements_do_not_overlap_and_distinct_classes_do_not_repeat():
    for screen in screens(30, widgets=("button", "toggle", "slider"), elements=(2, 3),
                          bars=False, distinct=True):  # fmt: skip
        kinds = [e.kind for e in screen.elements]
        assert len(kinds) == len(set(kinds)) and set(kinds) <= {"button", "toggle", "slider"}
        boxes = sorted(e.box for e in screen.elements)
        rows = sorted((b[1], b[3]) for b in boxes)
        assert all(a[1] <= b[0] for a, b in zip(rows, rows[1:], strict=False))


@pytest.mark.parametrize("kind", sorted(DRAWERS))
def test_each_element_is_drawn_inside_its_box(kind):
    """Drawn alone on a blank canvas, every element changes pixels, and only inside its box."""
    for screen in screens(40):
        element = next((e for e in screen.elements if e.kind == kind), None)
        if element is None:
            continue
        blank = Image.new("RGB", (screen.width, screen.height), screen.theme.background)
        drawn = blank.copy()
        DRAWERS[kind](ImageDraw.Draw(drawn), element, screen)
        changed = ImageChops.difference(blank, drawn).getbbox()
        assert changed is not None, f"{kind} drew nothing"
        x1, y1, x2, y2 = element.box
        assert x1 <= changed[0] and y1 <= changed[1] and changed[2] <= x2 and changed[3] <= y2
        return
    pytest.fail(f"no {kind} in 40 screens")


def element_at(screen, question):
    """The element a referring question names, by its box or by its centre point."""
    size = (screen.height, screen.width)
    boxes = CODEC.decode(question, size)
    if boxes:
        return min(screen.elements, key=lambda e: np.abs(np.subtract(e.box, boxes[0])).sum())
    (x, y), = CODEC.decode_points(question, size)  # fmt: skip
    inside = [e for e in screen.elements if e.box[0] <= x < e.box[2] and e.box[1] <= y < e.box[3]]
    return min(inside, key=lambda e: (e.box[2] - e.box[0]) * (e.box[3] - e.box[1]))


def close(box_a, box_b, screen):
    """Boxes equal up to the codec's rounding (one bin: width / 1000 pixels)."""
    tolerance = 2 * max(screen.width, screen.height) / 1000
    return np.allclose(box_a, box_b, atol=tolerance)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_is_answered_from_the_screen(task):
    data = ScreenDataset(40, 160, {task: 1.0}, CODEC.encode, CODEC.encode_point, points=0.5)
    for index in range(len(data)):
        screen, asked = data.plan(index)
        for q in asked:
            if task in ("widget", "ocr", "icon"):
                element = element_at(screen, q.question)
                expected = element.kind if task == "widget" else element.text
                assert q.answer == expected, q
                assert q.metric == ("widget_acc" if task == "widget" else "ui_referring_acc")
            elif task.startswith("find_"):
                (box,) = CODEC.decode(q.answer, (screen.height, screen.width))
                assert close(box, q.target_box, screen) and q.metric == "ui_grounding_acc"
                named = q.question.split(" ")[-2 if task == "find_icon" else -1].strip('?"')
                field = {"find_text": "text", "find_icon": "text", "find_widget": "kind"}[task]
                matches = [e for e in screen.elements if getattr(e, field) == named]
                assert [tuple(map(float, e.box)) for e in matches] == [q.target_box]
            elif task == "list_widgets":
                kind = q.question.split()[-1].rstrip(".")
                boxes = CODEC.decode(q.answer, (screen.height, screen.width))
                expected = screen.of_kind(kind)
                assert len(boxes) == len(expected) > 0
                assert all(close(b, e.box, screen) for b, e in zip(boxes, expected, strict=True))
            else:
                assert q.answer == describe(screen)


def test_describe_counts_the_content():
    screen = sample_screen(np.random.default_rng(0), 160, widgets=("button",), elements=(2, 2),
                           bars=False)  # fmt: skip
    assert describe(screen) == (
        f"A {screen.theme.name} screen titled {screen.title} with 2 buttons."
    )


def test_a_screen_asks_about_different_elements_and_scores_the_last_question():
    data = ScreenDataset(30, 160, {"widget": 1.0, "find_widget": 1.0}, CODEC.encode,
                         CODEC.encode_point, questions=3, widget_baseline="button")  # fmt: skip
    for index in range(len(data)):
        sample = data[index]
        screen, asked = data.plan(index)
        subjects = [q.element for q in asked]
        assert len(subjects) == len(set(subjects))
        assert [t.content for t in sample.turns[1::2]] == [q.answer for q in asked]
        assert sample.turns[0].content.endswith("<image>")
        assert sample.images[0].size == (screen.width, screen.height)
        last = asked[-1]
        assert sample.metric == last.metric and sample.target_box == last.target_box
        if last.metric == "widget_acc":
            assert sample.answers == [last.answer] and sample.baseline_answer == "button"


def test_data_module_baselines_come_from_the_training_split():
    data = UIDataModule(tasks={"widget": 1.0, "find_widget": 1.0}, widgets=["button", "toggle"],
                        elements=(1, 2), bars=False, train_samples=200, val_samples=8)  # fmt: skip
    data.setup("fit")
    boxes, answers = [], Counter()
    for index in range(200):
        screen, asked = data.train_samples.plan(index)
        scale = [screen.width, screen.height] * 2
        boxes += [np.divide(q.target_box, scale) for q in asked if q.target_box]
        answers.update(q.answer for q in asked if q.metric == "widget_acc")
    assert np.allclose(data.val_set.encoder.baseline_box, np.mean(boxes, axis=0))
    assert data.val_samples.widget_baseline == answers.most_common(1)[0][0]
    item = data.val_set[0]
    assert item["metric"] in ("widget_acc", "ui_grounding_acc")
    assert data.tokenizer.unk_token_id not in item["input_ids"].tolist()


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def ferret_record(index, question, answer, boxes, width=1170, height=2532):
    return {
        "id": index,
        "image": "screen.png",
        "image_w": width,
        "image_h": height,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
        "box_x1y1x2y2": boxes,
    }


def test_ferret_ui_records_are_converted_clamped_or_skipped_with_reasons(tmp_path):
    refer = "What's the UI type of the widget <bbox_location0>?"
    path = write(tmp_path / "ferret.json", [
        ferret_record(0, refer, "Button", [[[445, 524, 692, 632]], []]),
        ferret_record(1, "Where is the search icon?", "<bbox_location0>",
                      [[], [[1000, 2400, 1300, 2600]]]),  # reaches outside: clamped
        ferret_record(2, refer, "Hologram", [[[1, 2, 3, 4]], []]),  # unknown class
        ferret_record(3, refer, "Text", [[[2000, 10, 2100, 20]], []]),  # wholly outside
        ferret_record(4, refer, "Text", [[], []]),  # names a box it does not give
        {"id": 5, "image": "screen.png"},
    ])  # fmt: skip
    result = convert_ferret_ui(path, CODEC)
    assert [r["id"] for r in result.records] == ["0", "1"]
    first, second = (r["conversations"] for r in result.records)
    # Ferret's bins: int(pixel * 1000 / size): 445*1000/1170 = 380.3, 524*1000/2532 = 206.9
    assert first[0]["value"] == "<image>\nWhat's the UI type of the widget [380, 206, 591, 249]?"
    assert first[1]["value"] == "button"
    assert second[1]["value"] == "[854, 947, 999, 999]"
    assert result.clamped == 1
    assert result.skipped == Counter(unknown_class=1, box_outside_screen=1, missing_box=1,
                                     malformed_record=1)  # fmt: skip
    assert result.problems[0].startswith(f"{path} record 2: unknown_class")
    assert "4 skipped" in result.summary()


def test_rico_view_hierarchy_becomes_questions_about_its_widgets(tmp_path):
    tree = {"activity": {"root": {
        "class": "android.widget.FrameLayout", "bounds": [0, 0, 1440, 2560], "children": [
            {"class": "android.widget.Button", "bounds": [100, 200, 700, 400], "text": "Save",
             "visible-to-user": True},
            {"class": "android.widget.TextView", "bounds": [100, 500, 1600, 600],
             "text": "Library"},  # clamped to x2 = 1440
            {"class": "android.widget.Switch", "bounds": [0, 0, 10, 10],
             "visible-to-user": False},
            {"class": "android.widget.CheckBox", "bounds": [3000, 3000, 3100, 3100]},
        ]}}}  # fmt: skip
    result = convert_rico([write(tmp_path / "123.json", tree)], CODEC, tasks=("find_widget",),
                          questions=4)  # fmt: skip
    (record,) = result.records
    assert record["image"] == "123.jpg"
    turns = record["conversations"]
    questions = [t["value"].split("\n")[0] for t in turns[::2]]
    asked = dict(zip(questions, [t["value"] for t in turns[1::2]], strict=True))
    assert asked == {
        "Where is the button?": CODEC.encode((100, 200, 700, 400), (2560, 1440)),
        "Where is the text?": CODEC.encode((100, 500, 1440, 600), (2560, 1440)),
    }
    assert result.clamped == 1
    assert result.skipped == Counter(unmapped_class=1, invisible=1, box_outside_screen=1)
    assert "123.json root.3: box_outside_screen" in result.problems[0]


def test_referring_accuracy_compares_class_names_as_text():
    metric = ReferringAccuracy()
    metric.update(["Button", "B", "icon.", None], [["button"], ["button"], ["Icon"], ["text"]])
    assert metric.compute().item() == pytest.approx(2 / 4)


def test_taperception_f1_by_hand():
    metric = TaperceptionF1()
    preds = ["Yes, it is tappable.", "no", "yes", "maybe", "No.", "maybe"]
    truth = ["yes", "yes", "no", "yes", "no", "no"]
    # tp 1 (0), fn 2 (1: said no, 3: no yes/no), fp 2 (2: said yes, 5: no yes/no), tn 1 (4)
    metric.update(preds, [[t] for t in truth])
    assert metric.compute().item() == pytest.approx(2 * 1 / (2 * 1 + 2 + 2))
    assert metric.scores(preds, [[t] for t in truth]).tolist() == [1, 0, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="reference 0 must be 'yes' or 'no'"):
        metric.update(["yes"], [["tappable"]])


def test_ui_metrics_are_in_the_validation_contract():
    assert VALIDATION_METRICS["widget_acc"].build is ReferringAccuracy
    assert VALIDATION_METRICS["ui_grounding_acc"].answer == "box"
    assert VALIDATION_METRICS["taperception_f1"].baseline == "majority"


def test_converter_command_writes_records_problems_and_a_summary(tmp_path, capsys):
    refer = "What's the UI type of the widget <bbox_location0>?"
    path = write(tmp_path / "ferret.json", [
        ferret_record(0, refer, "Switch", [[[0, 0, 100, 100]], []]),
        ferret_record(1, refer, "Hologram", [[[0, 0, 100, 100]], []]),
    ])  # fmt: skip
    output, problems = tmp_path / "out.jsonl", tmp_path / "problems.txt"
    ui_convert.main(["ferret-ui", str(path), "--output", str(output),
                     "--problems", str(problems)])  # fmt: skip
    (line,) = output.read_text().splitlines()
    assert json.loads(line)["conversations"][1] == {"from": "gpt", "value": "toggle"}
    assert problems.read_text() == (
        f"{path} record 1: unknown_class: widget class 'Hologram' is not in the class map\n"
    )
    assert capsys.readouterr().out.strip() == (
        "1 records, 0 boxes clamped to the screen, 1 skipped (1 unknown_class)"
    )
