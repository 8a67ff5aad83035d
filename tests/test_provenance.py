"""Results files must say where their figures came from."""
import re

from utils.provenance import device_description, git_commit, provenance


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
