"""Conformance: what the SDK sends and what the emulator answers, against the official spec.

Every operation the kit uses is replayed through the real SDK; each request
body is validated against the body parameter's schema and each response body
against the schema of its status code in BatchService.json (2025-06-01),
loaded from ../shared/batch-api/ (or $BATCH_API_SPEC). The file is reference
data that is not part of the project: without it this test fails under CI
and is skipped outside it (tests/support/needs.py).
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from pathlib import Path

import jsonschema
import pytest
from azure.batch import BatchClient
from azure.batch import models as bm
from azure.batch.models._models import BatchJobTerminateOptions
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError

from batch_emulator import odata
from batch_emulator.server import new_key
from tests.support.needs import Need, missing
from tests.support.servers import start_batch_emulator

from .conftest import pool_options, py, wait_job_done, wait_pool_steady

SPEC_PATH = Path(os.environ.get("BATCH_API_SPEC")
                 or Path(__file__).resolve().parents[3] / "shared" / "batch-api" / "BatchService.json")

# The operations the kit's azure backend uses, by the spec's operation ids.
KIT_OPERATIONS = {
    "Pools_CreatePool", "Pools_GetPool", "Pools_PoolExists", "Pools_ListPools", "Pools_ResizePool",
    "Pools_DeletePool", "Nodes_ListNodes",
    "Jobs_CreateJob", "Jobs_GetJob", "Jobs_ListJobs", "Jobs_UpdateJob", "Jobs_TerminateJob", "Jobs_DeleteJob",
    "Jobs_GetJobTaskCounts", "Jobs_ListJobPreparationAndReleaseTaskStatus",
    "Tasks_CreateTask", "Tasks_CreateTaskCollection", "Tasks_ListTasks", "Tasks_GetTask", "Tasks_TerminateTask",
    "Tasks_DeleteTask", "Tasks_ReactivateTask", "Tasks_ListTaskFiles", "Tasks_GetTaskFile", "Tasks_GetTaskFileProperties",
}


# Enums the real service answers in another casing than the REST description
# lists (its enums are modelAsString, lower case): recorded GetPool answers say
# nodeFillType "Spread", recorded GetTask answers uploadCondition "TaskCompletion"
# / "TaskFailure" (tests/emulator/recorded/pools.json, tasks.json). For these the
# values are accepted in any letter case; every other enum stays exact.
CASE_INSENSITIVE_ENUMS = ("BatchNodeFillType", "OutputFileUploadCondition")


class Spec:
    def __init__(self, path: Path):
        doc = json.loads(path.read_text())
        self.definitions = doc["definitions"]
        for name in CASE_INSENSITIVE_ENUMS:
            d = self.definitions[name]
            d["pattern"] = "(?i)^(" + "|".join(map(re.escape, d.pop("enum"))) + ")$"
        self.parameters = doc.get("parameters", {})
        relaxed = json.loads(json.dumps(self.definitions))
        for d in relaxed.values():
            d.pop("required", None)   # a $select answer holds only what was selected
        self.relaxed = relaxed
        self.operations = []
        for template, ops in doc["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
            for method, op in ops.items():
                if method != "parameters":
                    self.operations.append((pattern, method.upper(), op))

    def operation(self, method: str, path: str):
        for pattern, m, op in self.operations:
            if m == method and pattern.match(path):
                return op
        return None

    def body_schema(self, op):
        for p in op.get("parameters", []):
            if "$ref" in p:
                p = self.parameters[p["$ref"].split("/")[-1]]
            if p.get("in") == "body":
                return p["schema"]
        return None

    def validate(self, schema: dict, instance, relaxed: bool = False) -> list[str]:
        """Errors of ``instance`` against ``schema``; $refs resolve into the spec's definitions."""
        root = {"definitions": self.relaxed if relaxed else self.definitions, "allOf": [schema]}
        validator = jsonschema.Draft4Validator(root)
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
                for e in validator.iter_errors(instance)]


@pytest.fixture(scope="module")
def spec():
    if not SPEC_PATH.exists():
        missing(Need.API_DESCRIPTION, f"the Batch REST API description is not at {SPEC_PATH}")
    return Spec(SPEC_PATH)


class Recorder:
    """Keeps every request/response pair the SDK's pipeline saw."""

    def __init__(self):
        self.exchanges = []

    def __call__(self, pipeline_response):
        self.exchanges.append(pipeline_response)


def _check_exchange(spec: Spec, pr, problems: list, seen: set):
    request, response = pr.http_request, pr.http_response
    path = re.sub(r"^https?://[^/]+", "", request.url).split("?")[0]
    op = spec.operation(request.method, path)
    where = f"{request.method} {path} -> {response.status_code}"
    if op is None:
        problems.append(f"{where}: no such operation in the spec")
        return
    seen.add(op["operationId"])
    # The request body the SDK sent.
    schema = spec.body_schema(op)
    content = request.content if hasattr(request, "content") else request.body
    if schema is not None and content:
        body = json.loads(content)
        problems += [f"{where} request {e}" for e in spec.validate(schema, body)]
    # The response the emulator gave.
    code = str(response.status_code)
    responses = op["responses"]
    if code not in responses and response.status_code < 400:
        problems.append(f"{where}: status {code} is not one the spec lists ({sorted(responses)})")
        return
    expected = responses.get(code) or responses["default"]
    if "request-id" not in response.headers:
        problems.append(f"{where}: no request-id header")
    # client-request-id is not required: the service echoes it only when asked
    # (return-client-request-id), which the SDK never does.
    for header in expected.get("headers", {}):
        if header == "DataServiceId" and header not in response.headers:
            problems.append(f"{where}: no {header} header")
    schema = expected.get("schema")
    if request.method == "HEAD" or schema is None or schema.get("type") == "file":
        return
    body = response.json()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query)
    # A later page carries its $select inside the emulator's continuation token.
    token = query.get("$skiptoken", [None])[0]
    selected = "$select" in query or bool(token and odata.decode_token(token).get("s"))
    problems += [f"{where} response {e}" for e in spec.validate(schema, body, relaxed=selected)]


def test_sdk_requests_and_emulator_responses_match_the_spec(spec, tmp_path):
    recorder = Recorder()
    with start_batch_emulator() as emu, BatchClient(emu.endpoint, emu.credential(),
                                                    raw_response_hook=recorder) as c:
        registry = bm.ContainerRegistryReference(registry_server="myregistry.azurecr.io",
                                                 username="user", password="secret")
        opts = pool_options("pool1", dedicated=1, low=1, slots=2)
        opts.virtual_machine_configuration.container_configuration = bm.BatchContainerConfiguration(
            type="dockerCompatible", container_image_names=["myregistry.azurecr.io/worker:1"],
            container_registries=[registry])
        c.create_pool(opts)
        c.get_pool("pool1")
        list(c.list_supported_images())   # not one the kit uses; checked against the spec all the same
        c.pool_exists("pool1")
        list(c.list_pools())
        wait_pool_steady(c, "pool1")
        list(c.list_nodes("pool1"))
        c.begin_resize_pool("pool1", bm.BatchPoolResizeOptions(target_dedicated_nodes=2),
                            polling_interval=0.05).result()
        wait_pool_steady(c, "pool1")

        c.create_job(bm.BatchJobCreateOptions(
            id="job1", pool_info=bm.BatchPoolInfo(pool_id="pool1"), all_tasks_complete_mode="noaction",
            constraints=bm.BatchJobConstraints(max_task_retry_count=1),
            common_environment_settings=[bm.EnvironmentSetting(name="K", value="V")]))
        c.get_job("job1")
        list(c.list_jobs())
        c.update_job("job1", bm.BatchJobUpdateOptions(priority=3))

        out = bm.OutputFile(
            file_pattern="output.pickle",
            destination=bm.OutputFileDestination(container=bm.OutputFileBlobContainerDestination(
                container_url="http://127.0.0.1:9/devstoreaccount1/outputs?sv=x&sig=y", path="task_1_output.pickle")),
            upload_options=bm.OutputFileUploadConfiguration(upload_condition="taskfailure"))
        full = bm.BatchTaskCreateOptions(
            id="task1", command_line=py("open('output.pickle', 'w').write('x')"),
            resource_files=[bm.ResourceFile(http_url="http://127.0.0.1:9/devstoreaccount1/in/r?sig=z",
                                            file_path="resource.pickle")],
            output_files=[out],
            container_settings=bm.BatchTaskContainerSettings(
                image_name="myregistry.azurecr.io/worker:1", working_directory="taskWorkingDirectory"),
            constraints=bm.BatchTaskConstraints(max_task_retry_count=2),
            environment_settings=[bm.EnvironmentSetting(name="A", value="1")])
        c.create_task("job1", full)
        c.create_tasks("job1", [bm.BatchTaskCreateOptions(
            id=f"t{i}", command_line=py("raise SystemExit(1)" if i == 0 else "print('hi')"),
            output_files=[out]) for i in range(5)])
        wait_job_done(c, "job1")
        c.get_job_task_counts("job1")
        list(c.list_tasks("job1"))
        list(c.list_tasks("job1", filter="state eq 'completed' and stateTransitionTime gt datetime'2020-01-01T00:00:00Z'",
                          select=["id", "state", "stateTransitionTime", "executionInfo"], max_results=2))
        c.get_task("job1", "task1")
        c.get_task("job1", "t0")
        list(c.list_task_files("job1", "t1", recursive=True))
        c.get_task_file_properties("job1", "t1", "stdout.txt")
        b"".join(c.download_task_file("job1", "t1", "stdout.txt"))
        c.reactivate_task("job1", "t0")
        wait_job_done(c, "job1")
        c.terminate_task("job1", "t1")
        c.delete_task("job1", "t2")

        # Error answers are checked against the BatchError schema too.
        for call in (lambda: c.get_job("missing"),
                     lambda: c.create_task("job1", bm.BatchTaskCreateOptions(id="t1", command_line="x")),
                     lambda: c.create_task_collection("job1", bm.BatchTaskGroup(task_values=[
                         bm.BatchTaskCreateOptions(id=f"x{i}", command_line="x") for i in range(101)])),
                     lambda: c.create_task("job1", bm.BatchTaskCreateOptions(id="bad id", command_line="x"))):
            with pytest.raises(HttpResponseError):
                call()
        with BatchClient(emu.endpoint, AzureNamedKeyCredential(emu.account, new_key()),
                         raw_response_hook=recorder) as wrong:
            with pytest.raises(HttpResponseError):
                wrong.get_job("job1")

        # The job preparation task (the shared config, once per node) and its status.
        c.create_job(bm.BatchJobCreateOptions(
            id="job2", pool_info=bm.BatchPoolInfo(pool_id="pool1"),
            job_preparation_task=bm.BatchJobPreparationTask(
                command_line=py("print('prep')"), wait_for_success=True,
                constraints=bm.BatchTaskConstraints(max_task_retry_count=1),
                environment_settings=[bm.EnvironmentSetting(name="P", value="1")])))
        c.create_task("job2", bm.BatchTaskCreateOptions(id="a", command_line=py("pass")))
        wait_job_done(c, "job2")
        list(c.list_job_preparation_and_release_task_status("job2"))

        c.begin_terminate_job("job1", BatchJobTerminateOptions(termination_reason="done"),
                              polling_interval=0.05).result()
        c.begin_delete_job("job1", polling_interval=0.05).result()
        c.begin_delete_pool("pool1", polling_interval=0.05).result()

    problems, seen = [], set()
    for pr in recorder.exchanges:
        _check_exchange(spec, pr, problems, seen)
    assert not problems, "\n".join(problems)
    assert KIT_OPERATIONS <= seen, f"not exercised: {sorted(KIT_OPERATIONS - seen)}"
    assert len(recorder.exchanges) > 40
