"""The bad-input corpus: every case is one line that names the problem and what
to do, a non-zero exit, no traceback, and, when the problem can be found
before anything is created, nothing created: the Batch emulator served no
request that changes anything and Azurite holds no container.

Each case runs the real CLI with `--backend azure` against Azurite and the
emulator (or the docker backend / --push where that is the point).
"""

import json

import pytest

from tests.docker.conftest import base_image, docker_client, registry  # noqa: F401  (fixtures, for the image cases)

GOOD = {
    "global_config": "def global_config(): return {'power': 2}",
    "parameters": "def parameters(): return [1, 2, 3]",
    "task": "def task(config, p): return p ** config['power']",
    "aggregate": "def aggregate(results): return sum(results)",
}
READ_ONLY = {"Pools_PoolExists", "Pools_GetPool", "Jobs_GetJob", "Jobs_GetJobTaskCounts", "Tasks_ListTasks"}


def task_source(**replace):
    return "\n".join(part for part in {**GOOD, **replace}.values() if part) + "\n"


def stage_then_tamper(tamper):
    """A case whose run folder exists (staged by a good local run) and is then edited."""
    def prepare(kit):
        kit.write_task(task_source())
        assert kit.run("--run", "bad").returncode == 0
        tamper(kit.run_dir("bad"))
    return prepare


def corrupt_journal(folder):
    (folder / "run.json").write_text("{ not json")


def rewrite_journal(folder):
    journal = json.loads((folder / "run.json").read_text())
    journal["inputs"]["tasks"] = "everything"
    (folder / "run.json").write_text(json.dumps(journal))


def corrupt_output(folder):
    (folder / "task_1_output.pickle").write_bytes(b"this is not a pickle")


CASES = [
    # (id, task.py source, extra flags, environment changes, preparation, exact error line, cloud untouched)
    ("syntax-error", task_source(parameters="def parameters(:\n    return [1]"), [], {}, None,
     "error: task.py has a syntax error at line 2: invalid syntax", True),
    ("missing-function", task_source(aggregate=""), [], {}, None,
     "error: task.py does not define aggregate(); it needs global_config(), parameters(), task(global_config, parameters) and aggregate(results)", True),
    ("wrong-signature", task_source(task="def task(config): return 1"), [], {}, None,
     "error: task.py: task(config) must take two arguments", True),
    ("import-fails", task_source(global_config="import no_such_module_here\ndef global_config(): return 1"), [], {}, None,
     "error: task.py failed to import: ModuleNotFoundError: No module named 'no_such_module_here'", True),
    ("parameters-empty", task_source(parameters="def parameters(): return []"), [], {}, None,
     "error: task.py: parameters() returned no items; there is nothing to run", True),
    ("parameters-not-iterable", task_source(parameters="def parameters(): return 42"), [], {}, None,
     "error: task.py: parameters() returned a int, which is not iterable; return a list with one item per task", True),
    ("parameters-not-picklable", task_source(parameters="def parameters(): return [1, lambda: 2]"), [], {}, None,
     None, True),  # the message names the pickler's own words; checked by prefix below
    ("parameters-huge", task_source(parameters="def parameters(): return [1, b'x' * (3 * 2**20)]"), ["--max-input-mb", "2"], {}, None,
     "error: task 1's parameters are 3.0 MB pickled, over the 2 MB limit (--max-input-mb); pass large data shared by all tasks through global_config(), or raise the limit", True),
    ("config-not-picklable", task_source(global_config="import threading\ndef global_config(): return threading.Lock()"), [], {}, None,
     "error: the global config cannot be pickled (TypeError: cannot pickle '_thread.lock' object); tasks receive their inputs as pickles", True),
    ("bad-workers", task_source(), ["--workers", "0"], {}, None,
     "error: argument --workers: must be at least 1, not 0 (see --help)", True),
    ("bad-backend", task_source(), ["--backend", "slurm"], {}, None,
     "error: argument --backend: invalid choice: 'slurm' (choose from 'local', 'docker', 'azure') (see --help)", True),
    ("bad-run-name", task_source(), ["--run", "no spaces"], {}, None,
     "error: argument --run: use 1 to 40 letters, digits, '-' or '_' (not '__'), starting with a letter or digit (see --help)", True),
    ("missing-account", task_source(), [], {"BATCH_ACCOUNT_NAME": ""}, None,
     "error: BATCH_ACCOUNT_NAME is not set: export the name of your Batch account (see the README's cloud quick start)", True),
    ("malformed-endpoint", task_source(), [], {"BATCH_ACCOUNT_ENDPOINT": "ftp://batch"}, None,
     "error: BATCH_ACCOUNT_ENDPOINT 'ftp://batch' is neither a host name nor an http(s) URL", True),
    ("malformed-connection-string", task_source(), [], {"STORAGE_ACCOUNT_CONNECTION_STRING": "garbage"}, None,
     "error: STORAGE_ACCOUNT_CONNECTION_STRING is malformed: expected key=value pairs separated by ';'", True),
    ("half-a-registry", task_source(), [], {"REGISTRY_SERVER": "acr1.azurecr.io"}, None,
     "error: REGISTRY_USERNAME, REGISTRY_PASSWORD not set: a private registry needs REGISTRY_SERVER, REGISTRY_USERNAME and REGISTRY_PASSWORD together", True),
    ("invalid-container", task_source(), ["--container", "Not_Valid"], {}, None,
     "error: --container 'Not_Valid' is not a valid blob container name: 3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit", True),
    ("invalid-pool", task_source(), ["--pool-id", "pool:1"], {}, None,
     "error: --pool-id 'pool:1': use 1 to 64 letters, digits, '-' or '_'", True),
    ("wrong-batch-key", task_source(), [], {"BATCH_ACCOUNT_KEY": "d3Jvbmcga2V5IGZvciB0aGUgdGVzdA=="}, None,
     "error: reaching Batch account 'emulator' failed: access denied (403 Forbidden): check the account key or your Entra ID sign-in; check BATCH_ACCOUNT_* variables", True),
    ("wrong-storage-key", task_source(), [], {"STORAGE_ACCOUNT_CONNECTION_STRING": "WRONG_STORAGE"}, None,
     "error: reaching storage account 'devstoreaccount1' failed: access denied (AuthorizationFailure): check the account key or your Entra ID sign-in; check STORAGE_ACCOUNT_* variables", True),
    ("endpoint-silent", task_source(), [], {"BATCH_ACCOUNT_ENDPOINT": "http://127.0.0.1:9"}, None,
     "error: reaching Batch account 'emulator' failed: the endpoint does not answer (check the endpoint variable and your network); check BATCH_ACCOUNT_* variables", True),
    ("task-timeout-bad", task_source(), ["--task-timeout", "soon"], {}, None,
     "error: argument --task-timeout: expected a positive duration such as 90s, 15m or 2h (a bare number is seconds), not 'soon' (see --help)", True),
    ("sas-hours-over-delegation-key", task_source(), ["--sas-hours", "200"],
     {"STORAGE_ACCOUNT_CONNECTION_STRING": "", "STORAGE_ACCOUNT_NAME": "devstoreaccount1", "STORAGE_ACCOUNT_KEY": ""}, None,
     "error: --sas-hours 200 is over 168 (7 days), the longest a user delegation key lasts: with Microsoft Entra ID "
     "(no STORAGE_ACCOUNT_KEY) the SAS URLs can live at most that long; use --sas-hours 168 or less, or give the storage account key", True),
    ("journal-corrupt", None, [], {}, stage_then_tamper(corrupt_journal),
     None, True),  # names the file and the parser's complaint; checked by prefix below
    ("journal-edited", None, [], {}, stage_then_tamper(rewrite_journal),
     None, True),
    ("output-corrupt", None, ["--backend", "local"], {}, stage_then_tamper(corrupt_output),
     "error: runs/bad/task_1_output.pickle is unreadable (IndexError); delete it and rerun with --run bad to run task 1 again", True),
]

PREFIXES = {
    "parameters-not-picklable": "error: task 1's parameters cannot be pickled (PicklingError: ",
    "journal-corrupt": "error: ",
    "journal-edited": "error: ",
}
CONTAINS = {
    "journal-corrupt": "run.json is unreadable (",
    "journal-edited": "run.json was changed by hand and no longer describes run 'bad'; move runs/bad/ away or choose another --run",
}


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_input(kit, cloud, case):
    name, source, flags, env, prepare, expected, untouched = case
    if source is not None:
        kit.write_task(source)
    if prepare is not None:
        prepare(kit)
    env = dict(env)
    if env.get("STORAGE_ACCOUNT_CONNECTION_STRING") == "WRONG_STORAGE":
        env["STORAGE_ACCOUNT_CONNECTION_STRING"] = cloud.env["STORAGE_ACCOUNT_CONNECTION_STRING"].replace(
            cloud.azurite.key, "d3Jvbmcga2V5IGZvciB0aGUgdGVzdA==")
    args = ["--backend", "azure", "--run", "bad", "--poll-interval", "0.2", *flags]
    before = cloud.emulator.stats()["requests"]["byOperation"]
    containers_before = {c.name for c in cloud.azurite.blob_service().list_containers()}  # Azurite is shared by the session
    done = kit.run(*args, env={**cloud.env, **env}, timeout=120)

    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    if expected is not None:
        assert errors[0] == expected
    else:
        assert errors[0].startswith(PREFIXES[name]) and CONTAINS.get(name, "") in errors[0], errors[0]
    assert done.stdout == ""
    if untouched:
        operations = cloud.emulator.stats()["requests"]["byOperation"]
        assert set(operations) - set(before) <= READ_ONLY, operations
        assert {c.name for c in cloud.azurite.blob_service().list_containers()} == containers_before


def test_the_corpus_has_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_a_task_returning_something_unpicklable_fails_that_task(kit):
    kit.write_task(task_source(task="import threading\ndef task(config, p): return threading.Lock() if p == 2 else p"))
    done = kit.run("--run", "bad")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors[0].startswith("error: 1 of 3 tasks failed (first: task 1, exit code 1)")
    assert "cannot pickle '_thread.lock' object" in done.stderr


def test_an_image_that_does_not_exist(kit):
    done = kit.run("--backend", "docker", "--run", "bad", "--image", "superbatch-no-such-image:0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "superbatch-no-such-image:0" in errors[0]
    assert "--build" in errors[0] or "no Docker engine" in errors[0]


# --- the image: digest, platform, pre-flight (a real engine and registry where needed) ---

WARNING_TAIL = "tasks name it by its tag, so nodes that pulled this tag earlier keep running the old image"


def warnings_of(done) -> list:
    return [line for line in done.stderr.splitlines() if line.startswith("warning:")]


def test_an_image_naming_no_registry_is_a_warning_that_says_what_may_happen(kit, cloud):
    kit.write_task(task_source())
    done = cloud.run(kit, "tagonly", "--image", "superbatch-worker:latest", env={"REGISTRY_SERVER": "", "REGISTRY_USERNAME": "", "REGISTRY_PASSWORD": ""})
    assert done.returncode == 0, done.stderr
    assert warnings_of(done) == [
        "warning: the image superbatch-worker:latest could not be resolved to a digest (it names no registry: set "
        f"REGISTRY_SERVER, or give --image REGISTRY/NAME:TAG); {WARNING_TAIL}"]


def test_a_tag_the_registry_does_not_hold_is_a_warning(kit, cloud, registry):
    kit.write_task(task_source())
    done = cloud.run(kit, "unpushed", "--image", "superbatch-never-pushed:1", env=registry.env())
    assert done.returncode == 0, done.stderr
    assert warnings_of(done) == [
        f"warning: the image {registry.server}/superbatch-never-pushed:1 could not be resolved to a digest (the registry "
        f"{registry.server} has no tag '1' of superbatch-never-pushed); {WARNING_TAIL}"]


def test_pushing_an_image_for_another_platform(kit, cloud, docker_client, registry):
    from tests.docker.test_never_old_code import arm64_image

    name = "superbatch-bad-arm64:1"
    arm64_image(docker_client, name)
    try:
        kit.write_task(task_source())
        done = cloud.run(kit, "bad", "--image", name, "--push", env=registry.env())
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
            f"error: --push: {name} would not run on Azure Batch: it is a linux/arm64 image and Batch nodes run "
            "linux/amd64 (x86-64); rebuild it with --build, which builds for linux/amd64"]
        assert set(cloud.emulator.stats()["requests"]["byOperation"]) <= READ_ONLY
    finally:
        docker_client.images.remove(name, force=True)


def test_a_task_that_fails_in_the_image_stops_at_the_preflight(kit, cloud, docker_client, base_image):
    kit.write_task(task_source(task="def task(config, p): return p / 0"))
    # The image's own worker: not cloud.run's --task-command, a path on this machine.
    done = kit.run("--backend", "azure", "--run", "bad", "--image", "superbatch-bad-preflight:1", "--build", "--base-image", base_image,
                   env=cloud.env, timeout=600)
    assert done.returncode == 1
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: pre-flight: task 0 exited with code 1 in the image superbatch-bad-preflight:1; nothing was pushed or "
        "created in the cloud; fix task.py (or the image's dependencies) and run again; last lines of its stderr:"], done.stderr
    assert "    ZeroDivisionError: division by zero" in done.stderr.splitlines()
    assert set(cloud.emulator.stats()["requests"]["byOperation"]) <= READ_ONLY
