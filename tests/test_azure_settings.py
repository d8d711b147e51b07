"""The azure backend's settings are checked before anything touches Azure.

These need no server: every case fails (or passes) on the settings alone.
"""

import pytest

from superbatch.backends.azure.settings import AzureSettings
from superbatch.cli import build_parser
from superbatch.errors import SuperbatchError
from superbatch.image import qualified_image

GOOD_ENV = {
    "BATCH_ACCOUNT_NAME": "mybatch",
    "BATCH_ACCOUNT_KEY": "a2V5",
    "BATCH_ACCOUNT_ENDPOINT": "mybatch.westeurope.batch.azure.com",
    "STORAGE_ACCOUNT_NAME": "mystorage",
    "STORAGE_ACCOUNT_KEY": "c2VjcmV0",
}


def settings(flags=(), **env):
    options = build_parser().parse_args(["--backend", "azure", *flags])
    environ = {key: value for key, value in {**GOOD_ENV, **env}.items() if value is not None}
    return AzureSettings.from_environment(options, "Run_1", environ)


def test_good_settings_and_their_defaults():
    s = settings()
    assert s.batch_endpoint == "https://mybatch.westeurope.batch.azure.com"
    # Derived from the run name, made a valid container name; "Run_1" loses its
    # capital and '_' on the way, so a hash of the exact name keeps it its own.
    assert s.container.startswith("superbatch-run-1-") and len(s.container) == len("superbatch-run-1-") + 6
    assert s.vm_image == ("microsoft-dsvm", "ubuntu-hpc", "2404") and s.node_agent_sku == "batch.node.ubuntu 24.04"
    assert not s.uses_entra
    assert "c2VjcmV0" not in repr(s) and "a2V5" not in repr(s)


def test_without_keys_the_settings_choose_entra_id():
    s = settings(BATCH_ACCOUNT_KEY=None, STORAGE_ACCOUNT_KEY=None)
    assert s.uses_entra and s.storage_key is None


def test_a_private_registry_qualifies_the_image():
    s = settings(["--image", "worker:1"], REGISTRY_SERVER="acr1.azurecr.io", REGISTRY_USERNAME="u", REGISTRY_PASSWORD="p")
    assert s.image == "acr1.azurecr.io/worker:1"
    assert qualified_image("acr1.azurecr.io/worker:1", "acr1.azurecr.io") == "acr1.azurecr.io/worker:1"


@pytest.mark.parametrize("flags, env, message", [
    ([], {"BATCH_ACCOUNT_NAME": None}, "BATCH_ACCOUNT_NAME is not set"),
    ([], {"BATCH_ACCOUNT_NAME": "My_Batch"}, "BATCH_ACCOUNT_NAME 'My_Batch' is not a Batch account name"),
    ([], {"BATCH_ACCOUNT_ENDPOINT": None}, "BATCH_ACCOUNT_ENDPOINT is not set"),
    ([], {"BATCH_ACCOUNT_ENDPOINT": "ftp://x"}, "is neither a host name nor an http(s) URL"),
    ([], {"BATCH_ACCOUNT_ENDPOINT": "http://mybatch.westeurope.batch.azure.com"}, "plain http is only accepted on this machine"),
    ([], {"STORAGE_ACCOUNT_NAME": None}, "no storage account: set STORAGE_ACCOUNT_CONNECTION_STRING"),
    ([], {"STORAGE_ACCOUNT_CONNECTION_STRING": "nonsense"}, "STORAGE_ACCOUNT_CONNECTION_STRING is malformed"),
    ([], {"STORAGE_ACCOUNT_CONNECTION_STRING": "AccountName=a;EndpointSuffix=x"}, "needs AccountName and AccountKey"),
    ([], {"REGISTRY_SERVER": "acr1.azurecr.io"}, "REGISTRY_USERNAME, REGISTRY_PASSWORD not set"),
    (["--container", "Bad_Name"], {}, "--container 'Bad_Name' is not a valid blob container name"),
    (["--container", "ab"], {}, "--container 'ab' is not a valid blob container name"),
    (["--pool-id", "pool/1"], {}, "--pool-id 'pool/1': use 1 to 64 letters"),
    (["--vm-image", "ubuntu"], {}, "--vm-image 'ubuntu': expected PUBLISHER:OFFER:SKU"),
    (["--dedicated-nodes", "0"], {}, "--dedicated-nodes and --spot-nodes are both 0"),
    (["--task-slots", "0"], {}, "--task-slots must be at least 1"),
    (["--sas-hours", "0"], {}, "--sas-hours and --poll-interval must be positive"),
])
def test_bad_settings_name_what_is_wrong(flags, env, message):
    with pytest.raises(SuperbatchError) as error:
        settings(flags, **env)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_entra_path_without_a_sign_in_is_one_clear_line(kit):
    """Entra ID cannot be reached from here: this checks what can be checked
    locally, that no key means DefaultAzureCredential, and that without any
    sign-in the run stops with one line before anything is created.
    AZURE_TOKEN_CREDENTIALS=dev keeps azure-identity to the developer sign-ins
    (az CLI, azd, PowerShell, VS Code: none installed here), so it never probes
    a managed-identity endpoint off this machine."""
    env = {"BATCH_ACCOUNT_NAME": "mybatch", "BATCH_ACCOUNT_ENDPOINT": "https://127.0.0.1:9",
           "STORAGE_ACCOUNT_NAME": "mystorage", "AZURE_TOKEN_CREDENTIALS": "dev",
           "BATCH_ACCOUNT_KEY": "", "STORAGE_ACCOUNT_KEY": "", "STORAGE_ACCOUNT_CONNECTION_STRING": ""}
    done = kit.run("--backend", "azure", "--run", "entra", env=env, timeout=120)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: reaching Batch account 'mybatch' failed: no Microsoft Entra ID sign-in is available "
                      "(run `az login`, or set the account key); check BATCH_ACCOUNT_* variables"]
    assert not (kit.run_dir("entra") / "config.pickle").exists()  # nothing staged either


def test_runs_whose_names_differ_only_in_case_or_punctuation_never_share_a_container():
    from superbatch.backends.azure.settings import default_container

    names = ["sweep", "Sweep", "SWEEP", "sweep_1", "sweep-1", "Sweep-1"]
    containers = [default_container(name) for name in names]
    assert len(set(containers)) == len(names), containers
    assert default_container("sweep-1") == "superbatch-sweep-1"  # a name that needs no change keeps its plain form


def test_runs_whose_names_differ_only_in_case_never_share_a_job():
    from superbatch.backends.azure.backend import job_id

    # Batch compares ids without regard to case.
    ids = [job_id(name, number).lower() for name in ("sweep", "Sweep", "sweep-2", "SWEEP") for number in (1, 2)]
    assert len(set(ids)) == len(ids), ids
