"""The virtual machine images the account supports (``GET /supportedimages``,
operation ``Pools_ListSupportedImages``).

A small fixed table, not Azure's full list: the two Ubuntu HPC images the
kit's container pools use. Each entry is copied from the service's own
answer, recorded on 2026-02-03 (Azure/azure-sdk-assets, commit 097db873,
js/sdk/batch/batch-rest/recordings/node/byos_account/
recording_should_list_supported_images.json; replayed in
tests/emulator/recorded/images.json), and listed in the service's order
(publisher, offer, sku).

``batchSupportEndOfLife`` is left out: Batch has announced the end of
support for Ubuntu 22.04 node agents on 2027-06-30 (FACTS.md), but the
recorded answer carries no such field for ``ubuntu-hpc 2204`` yet, and the
recording is the better source of what the service sends.

Filters: ``osType``, ``verificationType`` and ``nodeAgentSKUId`` with
``eq``/``ne``, as "OData filters in Batch"
(https://learn.microsoft.com/rest/api/batchservice/odata-filters-in-batch,
"List supported images") lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

_HPC_CAPABILITIES = ["DockerCompatible", "SupportsRDMAOnly", "Generation2VMImage", "IntelMPIRuntimeInstalled"]

_TABLE = [
    {"imageReference": {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2204", "version": "latest"},
     "verificationType": "unverified", "nodeAgentSKUId": "batch.node.ubuntu 22.04",
     "capabilities": _HPC_CAPABILITIES, "osType": "linux"},
    {"imageReference": {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2404", "version": "latest"},
     "verificationType": "verified", "nodeAgentSKUId": "batch.node.ubuntu 24.04",
     "capabilities": _HPC_CAPABILITIES, "osType": "linux"},
]


@dataclass(frozen=True)
class SupportedImage:
    seq: int      # the list position, which paging goes by
    body: dict

    def json(self) -> dict:
        return {**self.body, "imageReference": dict(self.body["imageReference"]),
                "capabilities": list(self.body["capabilities"])}


SUPPORTED_IMAGES = [SupportedImage(i, entry) for i, entry in enumerate(_TABLE, start=1)]

IMAGE_FIELDS = {
    "osType": lambda i: i.body["osType"],
    "verificationType": lambda i: i.body["verificationType"],
    "nodeAgentSKUId": lambda i: i.body["nodeAgentSKUId"],
}
