"""`make demo`'s check that the short profile visibly learned (the bar its record is held to)."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from demo import LEARNING_BAR, count_classes, grader_agrees, learning_check, learning_warnings  # noqa: E402


def test_accuracies_are_measured_in_multiples_of_chance():
    check = learning_check({"id_knn": 20.0, "ood_knn": 14.9}, id_classes=20, ood_classes=20)
    assert check["id_knn"] == {"accuracy": 20.0, "chance": 5.0, "times_chance": 4.0, "required": 4.0, "ok": True}
    assert check["ood_knn"]["times_chance"] == 2.98 and not check["ood_knn"]["ok"]
    assert set(check) == set(LEARNING_BAR)


def test_a_demo_that_did_not_learn_is_announced():
    # The record of 2026-11-24 (benchmarks/results/demo-cpu-2026-11-24.json): 9.8% and 10.5% on 20 + 20 classes.
    warnings = learning_warnings(learning_check({"id_knn": 9.8, "ood_knn": 10.5}, 20, 20))
    assert len(warnings) == 2
    assert warnings[0].startswith("WARNING: ID k-NN 9.80% (2.0x chance) is below the demo's bar of 4x chance (20.0%")
    assert "OOD k-NN 10.50% (2.1x chance)" in warnings[1] and "utils/config.py" in warnings[1]
    assert learning_warnings(learning_check({"id_knn": 25.0, "ood_knn": 16.0}, 20, 20)) == []


def test_probes_that_did_not_run_are_not_a_pass():
    check = learning_check({}, 20, 20)
    assert not check["id_knn"]["ok"] and "not measured" in learning_warnings(check)[0]


def test_classes_are_counted_from_the_data(tmp_path):
    np.savez(tmp_path / "train.npz", labels=np.array([7, 7, 3, 900]))
    np.savez(tmp_path / "ood.npz", labels=np.array([1, 2]))
    assert count_classes(tmp_path) == (3, 2)


def test_the_grader_replica_must_agree_with_eval_to_its_printed_precision():
    ours = {"id_knn": 34.2, "id_linear": 48.6}
    assert grader_agrees({"accuracies_fraction": {"id_knn": 0.342, "id_linear": 0.486}}, ours)
    assert not grader_agrees({"accuracies_fraction": {"id_knn": 0.344, "id_linear": 0.486}}, ours)
    assert not grader_agrees({"accuracies_fraction": {"id_knn": 0.342}}, ours)       # a missing number
    assert not grader_agrees({"accuracies_fraction": {}}, {})                          # nothing measured
