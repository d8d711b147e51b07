"""The azure backend: inputs in Blob Storage, tasks in an Azure Batch job.

    backend.py   the Backend: submit, follow, fetch, close (the flow's side)
    settings.py  environment variables and flags, checked before anything is created
    storage.py   blobs and SAS URLs; sas.py renews them for tasks still waiting
    batch.py     the pool, the run's job and its tasks, through azure-batch
    tasks.py     what one Batch task is
    codes.py     the service's error codes as one line each
    watchdog.py  a pool that cannot get nodes, diagnosed while tasks wait
    digests.py   the worker image by digest, so no node runs an old image
    elastic.py   autoscale pools that drain to zero; spot first, dedicated fallback
    cost.py      what the run's pool spent: node-hours, task-hours, price
    clients.py   SDK clients, and their errors as one line each
    ranges.py    compact sets of task indices for the journal

The Azure SDKs are imported only when this backend is used.
"""

from .backend import AzureBackend

__all__ = ["AzureBackend"]
