"""Confusion matrix and per-class precision/recall (npcnn.metrics)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from npcnn.metrics import classification_report, confusion_matrix


def test_confusion_matrix_matches_a_counting_loop() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=300)
    predictions = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 5, size=300))
    expected = np.zeros((5, 5), dtype=np.int64)
    for t, p in zip(labels, predictions, strict=True):
        expected[t, p] += 1
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 5), expected)
    # K defaults to the largest class seen + 1
    assert confusion_matrix([0, 2], [1, 0]).shape == (3, 3)


def test_precision_recall_by_hand() -> None:
    # true:      0 0 0 1 1 2
    # predicted: 0 0 1 1 2 2
    report = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    np.testing.assert_allclose(report.precision, [2 / 2, 1 / 2, 1 / 2])
    np.testing.assert_allclose(report.recall, [2 / 3, 1 / 2, 1 / 1])
    np.testing.assert_array_equal(report.support, [3, 2, 1])
    assert report.accuracy == pytest.approx(4 / 6)


def test_classes_never_predicted_or_absent_score_zero_not_nan() -> None:
    report = classification_report([0, 0, 1], [0, 0, 0], ["x", "y", "z"])
    assert report.precision.tolist() == [2 / 3, 0.0, 0.0]
    assert report.recall.tolist() == [1.0, 0.0, 0.0]
    assert not np.isnan(report.precision).any()


def test_report_is_json_ready_and_printable() -> None:
    report = classification_report([0, 1, 1], [0, 1, 0], ["T-shirt/top", "Trouser"])
    data = json.loads(json.dumps(report.to_dict()))
    assert data["confusion_matrix"] == [[1, 0], [1, 1]]
    assert [r["class"] for r in data["per_class"]] == ["T-shirt/top", "Trouser"]
    assert data["per_class"][1]["recall"] == pytest.approx(0.5)
    table = report.format_table().splitlines()
    assert len(table) == 3 and "T-shirt/top" in table[1] and "50.0%" in table[2]
    assert len(report.format_confusion().splitlines()) == 3


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="differ"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="lie in"):
        confusion_matrix([0, 3], [0, 1], num_classes=3)


def test_tables_stay_aligned_with_wide_class_names() -> None:
    """CJK characters take two terminal columns each; the columns must still line up."""
    from npcnn.text import display_width

    classes = ["T恤", "裤子", "pullover", "e\u0301"]  # an e with a combining accent
    report = classification_report(np.array([0, 1, 2, 3]), np.array([0, 1, 3, 3]), classes)
    for table in (report.format_table(), report.format_confusion()):
        widths = {display_width(line) for line in table.splitlines()}
        assert len(widths) == 1, table
    assert report.format_confusion().splitlines()[2].startswith("裤子 ")
