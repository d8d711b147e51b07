"""Resource files from and output files to Azurite, through SAS URLs as the kit makes them."""

import datetime as dt

import pytest
from azure.batch import models as bm
from azure.storage.blob import BlobSasPermissions, ContainerSasPermissions, generate_blob_sas, generate_container_sas

from .conftest import py, unique, wait_job_done


def _expiry():
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)


def blob_sas_url(storage, container, blob, **perms):
    token = generate_blob_sas(storage.account, container, blob, account_key=storage.key,
                              permission=BlobSasPermissions(**(perms or {"read": True})), expiry=_expiry())
    return f"{storage.blob_endpoint}/{container}/{blob}?{token}"


def container_sas_url(storage, container, **perms):
    token = generate_container_sas(storage.account, container, account_key=storage.key,
                                   permission=ContainerSasPermissions(**perms), expiry=_expiry())
    return f"{storage.blob_endpoint}/{container}?{token}"


@pytest.fixture
def containers(azurite):
    service = azurite.blob_service()
    names = unique("in").lower(), unique("out").lower()
    for name in names:
        service.create_container(name)
    return names


def output(pattern, url, condition="tasksuccess", path=None):
    return bm.OutputFile(
        file_pattern=pattern,
        destination=bm.OutputFileDestination(container=bm.OutputFileBlobContainerDestination(
            container_url=url, path=path)),
        upload_options=bm.OutputFileUploadConfiguration(upload_condition=condition))


def test_resource_files_in_and_outputs_out(client, job, azurite, containers):
    inputs, outputs = containers
    service = azurite.blob_service()
    service.get_blob_client(inputs, "task_0_resource.pickle").upload_blob(b"input-bytes")
    service.get_blob_client(inputs, "shared/a.txt").upload_blob(b"A")
    service.get_blob_client(inputs, "shared/sub/b.txt").upload_blob(b"B")
    service.get_blob_client(inputs, "other/c.txt").upload_blob(b"C")
    write_only = container_sas_url(azurite, outputs, write=True, create=True)
    code = ("import os, pathlib; data = pathlib.Path('resource.pickle').read_bytes(); "
            "pathlib.Path('output.pickle').write_bytes(data[::-1]); "
            "os.makedirs('logs/deep', exist_ok=True); pathlib.Path('logs/deep/x.log').write_text('log'); "
            "pathlib.Path('listing.txt').write_text(' '.join(sorted(str(p) for p in pathlib.Path('inputs').rglob('*.txt'))))")
    client.create_task(job, bm.BatchTaskCreateOptions(
        id="io", command_line=py(code),
        resource_files=[
            bm.ResourceFile(http_url=blob_sas_url(azurite, inputs, "task_0_resource.pickle"),
                            file_path="resource.pickle"),
            bm.ResourceFile(storage_container_url=container_sas_url(azurite, inputs, read=True, list=True),
                            blob_prefix="shared/", file_path="inputs"),
        ],
        output_files=[
            output("output.pickle", write_only, path="task_0_output.pickle"),
            output("listing.txt", write_only),
            output("logs/**/*.log", write_only, condition="taskcompletion", path="logs/io"),
            output("output.pickle", write_only, condition="taskfailure", path="should-not-exist"),
            output("../stdout.txt", write_only, condition="taskcompletion", path="io/stdout.txt"),
        ]))
    wait_job_done(client, job)
    t = client.get_task(job, "io")
    assert t.execution_info.result == "success", t.execution_info.failure_info
    blobs = sorted(b.name for b in service.get_container_client(outputs).list_blobs())
    assert blobs == ["io/stdout.txt", "listing.txt", "logs/io/deep/x.log", "task_0_output.pickle"]
    got = service.get_blob_client(outputs, "task_0_output.pickle").download_blob().readall()
    assert got == b"input-bytes"[::-1]
    listing = service.get_blob_client(outputs, "listing.txt").download_blob().readall().decode()
    assert listing == "inputs/shared/a.txt inputs/shared/sub/b.txt"


def test_failed_download_fails_the_task(client, job, azurite, containers):
    inputs, _ = containers
    client.create_task(job, bm.BatchTaskCreateOptions(
        id="nofile", command_line=py("pass"),
        resource_files=[bm.ResourceFile(http_url=blob_sas_url(azurite, inputs, "missing.bin"), file_path="x")]))
    wait_job_done(client, job)
    info = client.get_task(job, "nofile").execution_info
    assert info.result == "failure" and info.exit_code is None
    assert info.failure_info.category == "usererror" and info.failure_info.code == "BlobNotFound"
    assert "sig=" not in info.failure_info.message          # no SAS token leaks into task info


def test_failed_upload_fails_the_task(client, job, azurite, containers):
    _, outputs = containers
    read_only = container_sas_url(azurite, outputs, read=True)
    client.create_task(job, bm.BatchTaskCreateOptions(
        id="noupload", command_line=py("open('out.bin', 'wb').write(b'1')"),
        output_files=[output("out.bin", read_only)]))
    wait_job_done(client, job)
    info = client.get_task(job, "noupload").execution_info
    assert info.exit_code == 0 and info.result == "failure"
    assert info.failure_info.code == "FileUploadMiscError"
    names = {f.name for f in client.list_task_files(job, "noupload")}
    assert "fileuploaderr.txt" in names


def test_outputs_of_a_failed_task_follow_the_condition(client, job, azurite, containers):
    _, outputs = containers
    url = container_sas_url(azurite, outputs, write=True, create=True)
    client.create_task(job, bm.BatchTaskCreateOptions(
        id="bad", command_line=py("open('o.txt', 'w').write('x'); raise SystemExit(1)"),
        output_files=[output("o.txt", url, "tasksuccess", "on-success"),
                      output("o.txt", url, "taskfailure", "on-failure")]))
    wait_job_done(client, job)
    names = [b.name for b in azurite.blob_service().get_container_client(outputs).list_blobs()]
    assert names == ["on-failure"]
