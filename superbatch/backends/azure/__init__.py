"""The azure backend: inputs in Blob Storage, tasks in an Azure Batch job.

    backend.py   the Backend: submit, follow, fetch, close (the flow's side)
    settings.py  environment variables and flags, checked before anything is created
    storage.py   blobs and SAS URLs
    batch.py     the pool, the run's job and its tasks, through azure-batch
    tasks.py     what one Batch task is
    clients.py   SDK clients, and their errors as one line each
    ranges.py    compact sets of task indices for the journal

The Azure SDKs are imported only when this backend is used.
"""

from .backend import AzureBackend

__all__ = ["AzureBackend"]
