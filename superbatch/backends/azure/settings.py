"""The azure backend's settings: environment variables plus flags, all checked
before anything is created in the cloud. Nothing here talks to Azure."""

import argparse
import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional
from urllib.parse import urlparse

from ...errors import SuperbatchError
from ...image import TASK_COMMAND_LINE, qualified_image  # no docker SDK import: image.py loads it lazily

DEFAULT_VM_IMAGE = "microsoft-dsvm:ubuntu-hpc:2404"  # container-capable; see README (supported images)
DEFAULT_NODE_AGENT = "batch.node.ubuntu 24.04"

POOL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# A user delegation key (the SAS signing key of Microsoft Entra ID) is valid
# for at most 7 days ("Get User Delegation Key", Storage REST API:
# https://learn.microsoft.com/rest/api/storageservices/get-user-delegation-key).
USER_DELEGATION_HOURS = 168


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--pool-id", default="superbatch", help="Batch pool to use, created if missing (default: %(default)s)")
    group.add_argument("--vm-size", default="standard_d2s_v3", help="VM size of a new pool (default: %(default)s)")
    group.add_argument("--dedicated-nodes", type=int, default=1, metavar="N", help="most dedicated nodes of a new pool (its size with --fixed-pool) (default: %(default)s)")
    group.add_argument("--spot-nodes", type=int, default=0, metavar="N", help="most spot (low-priority) nodes of a new pool, used first (its size with --fixed-pool) (default: %(default)s)")
    group.add_argument("--fixed-pool", action="store_true", help="a new pool keeps --dedicated-nodes and --spot-nodes until deleted, instead of growing to the tasks and draining to zero nodes")
    group.add_argument("--price-per-node-hour", type=float, metavar="PRICE", help="price of one node-hour for the run's cost (default: the Azure Retail Prices API's, for the VM size and region)")
    group.add_argument("--task-slots", type=int, default=1, metavar="N", help="tasks each node runs at once, in a new pool (default: %(default)s)")
    group.add_argument("--vm-image", default=DEFAULT_VM_IMAGE, metavar="PUBLISHER:OFFER:SKU[:VERSION]", help="marketplace image of a new pool (default: %(default)s)")
    group.add_argument("--node-agent-sku", default=DEFAULT_NODE_AGENT, help="node agent SKU id matching --vm-image (default: %(default)s)")
    group.add_argument("--subnet-id", help="ARM id of a virtual network subnet for a new pool")
    group.add_argument("--container", metavar="NAME", help="blob container for the run's inputs and outputs (default: superbatch-<run>)")
    group.add_argument("--sas-hours", type=float, default=48.0, metavar="H", help="lifetime of the SAS URLs handed to the tasks (default: %(default)s)")
    group.add_argument("--poll-interval", type=float, default=5.0, metavar="S", help="seconds between polls of the job (default: %(default)s)")
    group.add_argument("--upload-threads", type=int, default=32, metavar="N", help="parallel blob uploads and Batch requests (default: %(default)s)")
    group.add_argument("--delete-job", action="store_true", help="delete the job once every output is home")
    group.add_argument("--delete-pool", action="store_true", help="delete the pool once every output is home")
    group.add_argument("--delete-container", action="store_true", help="delete the blob container once every output is home")
    group.add_argument("--emulate", nargs="?", const="", default=None, metavar="OPTIONS",
                       help="rehearse on this machine: Azurite and the Batch emulator stand in for the account (its variables are ignored); "
                            "OPTIONS are the emulator's, e.g. quota=dedicated-cores=0, faults=preempt=0.3, allocation=fail, delete-delay=1")
    group.add_argument("--cancel", action="store_true", help="terminate the run's job (and delete what --delete-* say) instead of running")


@dataclass
class AzureSettings:
    batch_account: str
    batch_endpoint: str
    batch_key: Optional[str]  # None: Microsoft Entra ID
    storage_connection_string: Optional[str]
    storage_account: Optional[str]
    storage_key: Optional[str]
    registry_server: Optional[str]
    registry_username: Optional[str]
    registry_password: Optional[str]
    image: str
    pool_id: str
    vm_size: str
    dedicated_nodes: int
    spot_nodes: int
    task_slots: int
    vm_image: tuple
    node_agent_sku: str
    subnet_id: Optional[str]
    container: str
    sas_hours: float
    poll_interval: float
    task_command: str
    threads: int
    task_timeout: Optional[float] = None  # seconds; the tasks' maxWallClockTime
    fixed_pool: bool = False  # a new pool of fixed size rather than elastic (elastic.py)
    price_per_node_hour: Optional[float] = None

    def __repr__(self) -> str:  # never show the secrets, even in a debugger
        return f"AzureSettings(batch_account={self.batch_account!r}, pool_id={self.pool_id!r}, container={self.container!r})"

    @property
    def uses_entra(self) -> bool:
        return self.batch_key is None

    @classmethod
    def from_environment(cls, options: argparse.Namespace, run_name: str, environ: Mapping[str, str] = os.environ,
                         task_command: Optional[str] = None) -> "AzureSettings":
        def get(name: str) -> Optional[str]:
            value = environ.get(name, "").strip()
            return value or None

        account = get("BATCH_ACCOUNT_NAME")
        if not account:
            raise SuperbatchError("BATCH_ACCOUNT_NAME is not set: export the name of your Batch account (see the README's cloud quick start)")
        if not re.fullmatch(r"[a-z0-9]{3,24}", account):
            raise SuperbatchError(f"BATCH_ACCOUNT_NAME {account!r} is not a Batch account name (3 to 24 lowercase letters and digits)")
        endpoint = batch_endpoint(get("BATCH_ACCOUNT_ENDPOINT"))

        connection_string = get("STORAGE_ACCOUNT_CONNECTION_STRING")
        storage_account, storage_key = get("STORAGE_ACCOUNT_NAME"), get("STORAGE_ACCOUNT_KEY")
        if connection_string:
            parts = parse_connection_string(connection_string)
            storage_account = parts.get("accountname", storage_account)
        elif not storage_account:
            raise SuperbatchError("no storage account: set STORAGE_ACCOUNT_CONNECTION_STRING, or STORAGE_ACCOUNT_NAME (with STORAGE_ACCOUNT_KEY, or none to sign in with Microsoft Entra ID)")
        elif not re.fullmatch(r"[a-z0-9]{3,24}", storage_account):
            raise SuperbatchError(f"STORAGE_ACCOUNT_NAME {storage_account!r} is not a storage account name (3 to 24 lowercase letters and digits)")

        registry = [get("REGISTRY_SERVER"), get("REGISTRY_USERNAME"), get("REGISTRY_PASSWORD")]
        if any(registry) and not all(registry):
            missing = [name for name, value in zip(("REGISTRY_SERVER", "REGISTRY_USERNAME", "REGISTRY_PASSWORD"), registry) if not value]
            raise SuperbatchError(f"{', '.join(missing)} not set: a private registry needs REGISTRY_SERVER, REGISTRY_USERNAME and REGISTRY_PASSWORD together")

        if not POOL_ID.match(options.pool_id):
            raise SuperbatchError(f"--pool-id {options.pool_id!r}: use 1 to 64 letters, digits, '-' or '_'")
        container = options.container or default_container(run_name)
        if not CONTAINER.match(container):
            raise SuperbatchError(f"--container {container!r} is not a valid blob container name: 3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit")
        vm_image = tuple(options.vm_image.split(":"))
        if len(vm_image) not in (3, 4) or not all(vm_image):
            raise SuperbatchError(f"--vm-image {options.vm_image!r}: expected PUBLISHER:OFFER:SKU or PUBLISHER:OFFER:SKU:VERSION")
        for flag, value, least in (("--dedicated-nodes", options.dedicated_nodes, 0), ("--spot-nodes", options.spot_nodes, 0),
                                   ("--task-slots", options.task_slots, 1), ("--upload-threads", options.upload_threads, 1)):
            if value < least:
                raise SuperbatchError(f"{flag} must be at least {least}, not {value}")
        if options.dedicated_nodes + options.spot_nodes == 0:
            raise SuperbatchError("--dedicated-nodes and --spot-nodes are both 0: a new pool would have no node to run the tasks")
        if not options.sas_hours > 0 or not options.poll_interval > 0:
            raise SuperbatchError("--sas-hours and --poll-interval must be positive")
        price = getattr(options, "price_per_node_hour", None)
        if price is not None and not price >= 0:
            raise SuperbatchError(f"--price-per-node-hour must be 0 or more, not {price}")
        if not connection_string and not storage_key and options.sas_hours > USER_DELEGATION_HOURS:
            raise SuperbatchError(
                f"--sas-hours {options.sas_hours:g} is over {USER_DELEGATION_HOURS} (7 days), the longest a user delegation key "
                "lasts: with Microsoft Entra ID (no STORAGE_ACCOUNT_KEY) the SAS URLs can live at most that long; "
                f"use --sas-hours {USER_DELEGATION_HOURS} or less, or give the storage account key")
        if task_command is None:  # the backend's choice, else --task-command, else worker.py in the image
            task_command = TASK_COMMAND_LINE if getattr(options, "task_command", None) is None else options.task_command
        if not task_command.strip():
            raise SuperbatchError("--task-command is empty")
        if not options.image.strip():
            raise SuperbatchError("--image is empty: name the worker image (or set DOCKER_IMAGE)")

        return cls(
            batch_account=account, batch_endpoint=endpoint, batch_key=get("BATCH_ACCOUNT_KEY"),
            storage_connection_string=connection_string, storage_account=storage_account, storage_key=storage_key,
            registry_server=registry[0], registry_username=registry[1], registry_password=registry[2],
            image=qualified_image(options.image, registry[0]), pool_id=options.pool_id, vm_size=options.vm_size,
            dedicated_nodes=options.dedicated_nodes, spot_nodes=options.spot_nodes, task_slots=options.task_slots,
            vm_image=vm_image, node_agent_sku=options.node_agent_sku, subnet_id=options.subnet_id, container=container,
            sas_hours=options.sas_hours, poll_interval=options.poll_interval, task_command=task_command,
            threads=options.upload_threads, task_timeout=getattr(options, "task_timeout", None),
            fixed_pool=getattr(options, "fixed_pool", False), price_per_node_hour=price,
        )


def default_container(run_name: str) -> str:
    """superbatch-<run>, in the lowercase letters, digits and single hyphens
    that container names allow. When that loses something (capitals, '_',
    '--'), a hash of the exact name keeps two runs from sharing a container:
    'Sweep' and 'sweep' never do."""
    simple = re.sub(r"[^a-z0-9]+", "-", run_name.lower()).strip("-")
    if simple == run_name:
        return f"superbatch-{simple}"
    import hashlib

    return f"superbatch-{simple}-{hashlib.blake2b(run_name.encode(), digest_size=3).hexdigest()}"


def batch_endpoint(value: Optional[str]) -> str:
    """BATCH_ACCOUNT_ENDPOINT as a URL: a bare host name means https."""
    if not value:
        raise SuperbatchError("BATCH_ACCOUNT_ENDPOINT is not set: export your Batch account's endpoint (az batch account show --query accountEndpoint)")
    url = value if "://" in value else "https://" + value
    parsed = urlparse(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise SuperbatchError(f"BATCH_ACCOUNT_ENDPOINT {value!r} is neither a host name nor an http(s) URL")
    if parsed.scheme == "http" and parsed.hostname not in LOOPBACK:
        raise SuperbatchError(f"BATCH_ACCOUNT_ENDPOINT {value!r}: plain http is only accepted on this machine (an emulator); use https")
    return url.rstrip("/")


def parse_connection_string(value: str) -> dict:
    parts = {}
    for item in value.split(";"):
        if item.strip():
            key, sep, part = item.partition("=")
            if not sep:
                raise SuperbatchError("STORAGE_ACCOUNT_CONNECTION_STRING is malformed: expected key=value pairs separated by ';'")
            parts[key.strip().lower()] = part.strip()
    if "accountname" not in parts or "accountkey" not in parts:
        raise SuperbatchError("STORAGE_ACCOUNT_CONNECTION_STRING needs AccountName and AccountKey (az storage account show-connection-string)")
    return parts


