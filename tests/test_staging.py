"""Staging writes each input once, content-hashed, and notices changes."""

import joblib
import pytest

from superbatch.errors import SuperbatchError
from superbatch.runs import RunFolder
from superbatch.staging import Stager
from superbatch.taskdef import TaskDefinition


def definition(config, items):
    return TaskDefinition(path=None, global_config=lambda: config, parameters=lambda: items,
                          task=lambda c, p: p, aggregate=lambda r: r)


def test_stages_config_and_parameters_in_the_file_contract(tmp_path):
    run = RunFolder(tmp_path, "r1")
    assert Stager(run).stage(definition({"k": 1}, ["a", "b"])) == 2
    assert joblib.load(tmp_path / "r1" / "config.pickle") == {"k": 1}
    assert joblib.load(tmp_path / "r1" / "task_1_resource.pickle") == "b"
    journal = RunFolder(tmp_path, "r1").journal
    assert len(journal["inputs"]["tasks"]) == 2 and len(journal["inputs"]["config"]) == 32


def test_unchanged_inputs_are_not_written_again(tmp_path):
    run = RunFolder(tmp_path, "r1")
    Stager(run).stage(definition(1, [1, 2]))
    resource = tmp_path / "r1" / "task_0_resource.pickle"
    before = resource.stat().st_mtime_ns, resource.stat().st_ino
    Stager(RunFolder(tmp_path, "r1")).stage(definition(1, [1, 2]))
    assert (resource.stat().st_mtime_ns, resource.stat().st_ino) == before


def test_a_changed_config_invalidates_every_output_on_restage(tmp_path):
    run = RunFolder(tmp_path, "r1")
    Stager(run).stage(definition(1, [1, 2]))
    for index in range(2):
        joblib.dump(index, run.output_path(index))
    with pytest.raises(SuperbatchError, match="the global config changed"):
        Stager(RunFolder(tmp_path, "r1")).stage(definition(2, [1, 2]))
    assert run.is_home(0) and run.is_home(1)  # refusing changes nothing
    stager = Stager(RunFolder(tmp_path, "r1"), restage=True)
    stager.stage(definition(2, [1, 2]))
    assert stager.restaged == [0, 1]
    assert not run.is_home(0) and not run.is_home(1)
    assert RunFolder(tmp_path, "r1").journal["generation"] == 1


def test_the_journal_is_replaced_atomically_and_checked(tmp_path):
    run = RunFolder(tmp_path, "r1")
    run.journal["x"] = 1
    run.save()
    assert [p.name for p in (tmp_path / "r1").iterdir()] == ["run.json"]
    (tmp_path / "r1" / "run.json").write_text("{not json")
    with pytest.raises(SuperbatchError, match="run.json is unreadable"):
        RunFolder(tmp_path, "r1")
