"""Blob storage: the run's inputs go up, its outputs come down.

Inputs are uploaded once: each blob carries the content hash of its file in
its metadata, so that after a crash one listing tells what is already there.
Tasks get SAS URLs that can read only their own blobs, and one container SAS
that can only create and write, for their outputs; every SAS expires.
"""

import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Optional

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    ExponentialRetry,
    generate_blob_sas,
    generate_container_sas,
)

from .clients import explain, transport
from .settings import AzureSettings, parse_connection_string

HASH_KEY = "superbatchhash"  # blob metadata key holding the staged file's content hash


def retry_policy() -> ExponentialRetry:
    """Retries after about 2, 4, 6, 10, 18 and 34 s. The SDK's default waits 15 s before
    the first retry, so one failed request among thousands stalled staging, or the
    aggregate, by 15 s."""
    return ExponentialRetry(initial_backoff=2, increment_base=2, retry_total=6, random_jitter_range=1)


class BlobStore:
    def __init__(self, settings: AzureSettings):
        self.settings = settings
        options = dict(transport=transport(settings.threads), retry_policy=retry_policy(), max_single_put_size=64 * 1024 * 1024)
        self.account_key = None
        self._delegation_key = None
        if settings.storage_connection_string:
            self.service = BlobServiceClient.from_connection_string(settings.storage_connection_string, **options)
            self.account_key = parse_connection_string(settings.storage_connection_string)["accountkey"]
        elif settings.storage_key:
            url = f"https://{settings.storage_account}.blob.core.windows.net"
            self.service = BlobServiceClient(url, credential={"account_name": settings.storage_account, "account_key": settings.storage_key}, **options)
            self.account_key = settings.storage_key
        else:
            from azure.identity import DefaultAzureCredential

            url = f"https://{settings.storage_account}.blob.core.windows.net"
            self.service = BlobServiceClient(url, credential=DefaultAzureCredential(), **options)
        self.container = self.service.get_container_client(settings.container)
        self.account_name = self.service.account_name

    # --- set-up and checks -------------------------------------------------

    def check(self) -> None:
        """Reach the account with its credentials, creating nothing."""
        try:
            self.container.exists()
        except Exception as error:
            raise explain(error, f"reaching storage account {self.account_name!r}", "check STORAGE_ACCOUNT_* variables") from None

    def create_container(self) -> None:
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        except Exception as error:
            raise explain(error, f"creating blob container {self.settings.container!r}") from None

    def delete_container(self) -> None:
        try:
            self.container.delete_container()
        except ResourceNotFoundError:
            pass

    # --- inputs --------------------------------------------------------------

    def staged_hashes(self, prefix: str) -> dict:
        """Blob name -> content hash, for the blobs under prefix that we uploaded."""
        found = {}
        for blob in self.container.list_blobs(name_starts_with=prefix, include=["metadata"]):
            if blob.metadata and HASH_KEY in blob.metadata:
                found[blob.name] = blob.metadata[HASH_KEY]
        return found

    def upload_files(self, files: Iterable[tuple]) -> int:
        """Upload (blob name, local path, content hash) triples in parallel; returns the count."""

        def upload(item) -> None:
            name, path, digest = item
            with open(path, "rb") as data:
                self.container.upload_blob(name, data, overwrite=True, metadata={HASH_KEY: digest})

        return self._upload_all(files, upload)

    def _upload_all(self, items: Iterable, upload) -> int:
        # At most a few uploads per thread are queued at once: pool.map would queue one
        # future per file up front, 34 MB for 20,000 files.
        count = 0
        limit = 4 * self.settings.threads
        with ThreadPoolExecutor(self.settings.threads, thread_name_prefix="upload") as pool:
            queued: set = set()
            for item in items:
                if len(queued) >= limit:
                    done, queued = wait(queued, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
                        count += 1
                queued.add(pool.submit(upload, item))
            for future in as_completed(queued):
                future.result()
                count += 1
        return count

    # --- SAS URLs ------------------------------------------------------------

    def _signing(self) -> dict:
        if self.account_key:
            return {"account_key": self.account_key}
        if self._delegation_key is None:  # Entra ID: a user delegation key, valid as long as the SAS
            start = datetime.now(timezone.utc) - timedelta(minutes=5)
            self._delegation_key = self.service.get_user_delegation_key(start, self._expiry())
        return {"user_delegation_key": self._delegation_key}

    def _expiry(self) -> datetime:
        return datetime.now(timezone.utc) + timedelta(hours=self.settings.sas_hours)

    def read_url(self, blob_name: str) -> str:
        """A URL that can read this one blob, and nothing else, until it expires."""
        sas = generate_blob_sas(
            self.account_name, self.settings.container, blob_name,
            permission=BlobSasPermissions(read=True), expiry=self._expiry(),
            start=datetime.now(timezone.utc) - timedelta(minutes=5), **self._signing(),
        )
        return f"{self.container.get_blob_client(blob_name).url}?{sas}"

    def results_url(self) -> str:
        """A container URL for chunk tasks: list, create and write blobs, no reading."""
        sas = generate_container_sas(
            self.account_name, self.settings.container,
            permission=ContainerSasPermissions(list=True, create=True, write=True), expiry=self._expiry(),
            start=datetime.now(timezone.utc) - timedelta(minutes=5), **self._signing(),
        )
        return f"{self.container.url}?{sas}"

    def output_url(self) -> str:
        """A container URL that can only create and write blobs, until it expires."""
        sas = generate_container_sas(
            self.account_name, self.settings.container,
            permission=ContainerSasPermissions(create=True, write=True), expiry=self._expiry(),
            start=datetime.now(timezone.utc) - timedelta(minutes=5), **self._signing(),
        )
        return f"{self.container.url}?{sas}"

    # --- outputs -------------------------------------------------------------

    def read(self, blob_name: str) -> Optional[bytes]:
        """A small blob's content, or None if there is none of that name."""
        try:
            return self.container.download_blob(blob_name, max_concurrency=1).readall()
        except ResourceNotFoundError:
            return None

    def names(self, prefix: str) -> set:
        """The names of the blobs under prefix, without it."""
        return {blob.name[len(prefix):] for blob in self.container.list_blobs(name_starts_with=prefix)}

    def upload_data(self, items: Iterable[tuple]) -> int:
        """Upload (blob name, bytes) pairs, made as they are needed, in parallel."""
        return self._upload_all(items, lambda item: self.container.upload_blob(item[0], item[1], overwrite=True))

    def download(self, blob_name: str, destination: Path) -> None:
        """Download a blob to destination, which appears whole or not at all."""
        partial = destination.with_name(destination.name + ".partial")
        with open(partial, "wb") as file:
            self.container.download_blob(blob_name, max_concurrency=1).readinto(file)
        os.replace(partial, destination)
