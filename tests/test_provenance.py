"""Results files must say where their figures came from."""
import re

from utils.provenance import device_description, free_results_path, git_commit, provenance


def test_provenance_names_commit_device_and_date():
    record = provenance("cpu")
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"]), record   # the tests run inside the git checkout
    assert isinstance(record["dirty"], bool)
    assert record["device"].startswith("cpu: ") and "cores" in record["device"]
    assert re.match(r"\d{4}-\d\d-\d\dT", record["date"]) and record["torch"]


def test_git_commit_outside_a_repository_is_unknown_not_invented(tmp_path):
    assert git_commit(tmp_path) == {"commit": None, "dirty": None}


def test_device_description_defaults_to_the_cpu():
    assert device_description().startswith("cpu: ")


def test_a_second_record_of_the_day_is_written_beside_the_first(tmp_path):
    first = free_results_path(tmp_path, "suite-time-cpu-2026-12-07")
    assert first.name == "suite-time-cpu-2026-12-07.json"
    first.write_text("{}")
    second = free_results_path(tmp_path, "suite-time-cpu-2026-12-07")
    assert second.name == "suite-time-cpu-2026-12-07b.json" and first.read_text() == "{}"
