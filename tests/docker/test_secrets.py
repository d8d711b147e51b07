"""No secret leaks from any backend: with every secret in the environment,
runs on local, docker (with --build --push, so the registry password is used)
and azure leave no account key, registry password or SAS signature in the run
folders, logs, summaries, standard output or standard error."""

import shlex
import sys

from tests.azure.conftest import azurite, cloud, make_cloud  # noqa: F401  (fixtures)
from tests.test_local import FAILING_TASK


def test_no_backend_leaks_a_secret(kit, cloud, registry, base_image, tmp_path):
    kit.write_task(FAILING_TASK)  # a failure too, so that error reports are scanned
    image = f"{registry.server}/superbatch-secrets:test"
    env = {**cloud.env, **registry.env()}
    outputs = {}
    runs = {
        "local": ["--backend", "local"],
        "docker": ["--backend", "docker", "--build", "--base-image", base_image, "--push", "--image", image],
        "azure": ["--backend", "azure", "--poll-interval", "0.2", "--image", image,
                  "--task-command", f"{shlex.quote(sys.executable)} {shlex.quote(str(kit.path / 'worker.py'))}"],
    }
    for name, flags in runs.items():
        summary = tmp_path / f"{name}.json"
        done = kit.run(*flags, "--run", f"secrets-{name}", "--allow-failures", "--debug", "--summary-json", summary, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        outputs[f"{name} stdout"] = done.stdout
        outputs[f"{name} stderr"] = done.stderr
        outputs[f"{name} summary"] = summary.read_text()
    for path in (kit.path / "runs").rglob("*"):
        if path.is_file():
            outputs[str(path)] = path.read_bytes().decode(errors="replace")
    assert sum("secrets-" in where for where in outputs) > 20  # the three run folders were scanned

    secrets = {"Batch key": cloud.emulator.key, "storage key": cloud.azurite.key,
               "registry password": registry.password, "SAS signature": "sig="}
    for where, text in outputs.items():
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} is in {where}"
