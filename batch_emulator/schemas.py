"""The emulator's own models of the request bodies it accepts.

A handful of small type classes describe each request type: which properties
are required, their types, enumerations and limits (the facts come from the
Batch REST API description, 2025-06-01; the wording and structure here are
the emulator's own). ``validate`` walks a parsed JSON body and either returns
a cleaned copy (unknown properties dropped, as the service ignores what it
does not know) or raises the error the service answers with:
``MissingRequiredProperty`` or ``InvalidPropertyValue`` naming the property.
"""

from __future__ import annotations

import re

from . import exceptions as exc

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# ISO 8601 durations as the service writes them, e.g. PT1H30M, P7D, PT0.5S.
DURATION_PATTERN = re.compile(
    r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")
INT32 = (-(2**31), 2**31 - 1)


class Type:
    def check(self, value, path: str):
        raise NotImplementedError


def _invalid(path: str, value, reason: str):
    return exc.InvalidPropertyValue(values={
        "PropertyName": path, "PropertyValue": str(value)[:200], "Reason": reason})


class Any_(Type):
    """A property the emulator stores and echoes but does not interpret."""

    def check(self, value, path):
        return value


class Str(Type):
    def __init__(self, max_len: int | None = None, pattern: re.Pattern | None = None,
                 reason: str = "", nonempty: bool = False):
        self.max_len, self.pattern, self.reason, self.nonempty = max_len, pattern, reason, nonempty

    def check(self, value, path):
        if not isinstance(value, str):
            raise _invalid(path, value, "The value must be a string.")
        if self.nonempty and not value.strip():
            raise _invalid(path, value, "The value must not be empty.")
        if self.max_len is not None and len(value) > self.max_len:
            raise _invalid(path, value, f"The value must not be longer than {self.max_len} characters.")
        if self.pattern is not None and not self.pattern.match(value):
            raise _invalid(path, value, self.reason or "The value is not in the expected format.")
        return value


class Id(Str):
    def __init__(self):
        super().__init__(pattern=ID_PATTERN, reason=(
            "An id may hold letters, digits, hyphens and underscores, at most 64 characters."))


class Duration(Str):
    def __init__(self):
        super().__init__(pattern=DURATION_PATTERN, reason="The value must be an ISO 8601 duration.")


class Url(Str):
    def __init__(self):
        super().__init__(pattern=re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$"),
                         reason="The value must be an absolute URL.")


class Int(Type):
    def __init__(self, minimum: int = INT32[0], maximum: int = INT32[1]):
        self.minimum, self.maximum = minimum, maximum

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(path, value, "The value must be an integer.")
        if not self.minimum <= value <= self.maximum:
            raise _invalid(path, value, f"The value must be between {self.minimum} and {self.maximum}.")
        return value


class Bool(Type):
    def check(self, value, path):
        if not isinstance(value, bool):
            raise _invalid(path, value, "The value must be true or false.")
        return value


class Enum(Type):
    def __init__(self, *choices: str):
        self.choices = choices
        # The service accepts enumeration values in any letter case.
        self._by_lower = {c.lower(): c for c in choices}

    def check(self, value, path):
        if isinstance(value, str) and value.lower() in self._by_lower:
            return self._by_lower[value.lower()]
        raise _invalid(path, value, "The value must be one of: " + ", ".join(self.choices) + ".")


class Arr(Type):
    def __init__(self, item: Type, max_items: int | None = None):
        self.item, self.max_items = item, max_items

    def check(self, value, path):
        if not isinstance(value, list):
            raise _invalid(path, value, "The value must be a list.")
        if self.max_items is not None and len(value) > self.max_items:
            raise _invalid(path, f"{len(value)} items", f"At most {self.max_items} items are allowed.")
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


class Obj(Type):
    def __init__(self, props: dict[str, Type], required: tuple[str, ...] = (), rule=None):
        self.props, self.required, self.rule = props, required, rule

    def check(self, value, path):
        if not isinstance(value, dict):
            raise _invalid(path or "body", value, "The value must be a JSON object.")
        for name in self.required:
            if value.get(name) is None:
                raise exc.MissingRequiredProperty(values={"PropertyName": _join(path, name)})
        out = {}
        for name, typ in self.props.items():
            if name in value and value[name] is not None:
                out[name] = typ.check(value[name], _join(path, name))
        if self.rule is not None:
            self.rule(out, path)
        return out


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validate(model: Obj, body) -> dict:
    return model.check(body, "")


# --- rules that span properties -------------------------------------------------

def _resource_file_rule(rf: dict, path: str):
    sources = [k for k in ("autoStorageContainerName", "storageContainerUrl", "httpUrl") if k in rf]
    if len(sources) != 1:
        raise _invalid(path, ",".join(sources) or "none",
                       "Exactly one of autoStorageContainerName, storageContainerUrl and httpUrl must be given.")
    if "httpUrl" in rf and not rf.get("filePath"):
        raise exc.MissingRequiredProperty(values={"PropertyName": _join(path, "filePath")})
    if "blobPrefix" in rf and "httpUrl" in rf:
        raise _invalid(_join(path, "blobPrefix"), rf["blobPrefix"],
                       "blobPrefix is only valid with a container source.")
    fp = rf.get("filePath")
    if fp is not None and (fp.startswith("/") or ".." in fp.replace("\\", "/").split("/")):
        raise _invalid(_join(path, "filePath"), fp, "The path must stay inside the task working directory.")


def _job_pool_info_rule(info: dict, path: str):
    if "autoPoolSpecification" in info:
        raise _invalid(_join(path, "autoPoolSpecification"), "autoPoolSpecification",
                       "Auto pools are not supported by the Batch emulator; give poolId.")
    if not info.get("poolId"):
        raise exc.MissingRequiredProperty(values={"PropertyName": _join(path, "poolId")})


def _max_parallel_rule(job: dict, path: str):
    mpt = job.get("maxParallelTasks")
    if mpt is not None and mpt != -1 and mpt < 1:
        raise _invalid("maxParallelTasks", mpt, "The value must be -1 or greater than 0.")


# --- the request types ----------------------------------------------------------

DISPLAY_NAME = Str(max_len=1024)
ENVIRONMENT_SETTING = Obj({"name": Str(nonempty=True), "value": Str()}, required=("name",))
METADATA_ITEM = Obj({"name": Str(), "value": Str()}, required=("name", "value"))
REGISTRY = Obj({
    "username": Str(), "password": Str(), "registryServer": Str(), "identityReference": Any_()})
CONTAINER_CONFIGURATION = Obj({
    "type": Enum("dockerCompatible", "criCompatible"),
    "containerImageNames": Arr(Str(nonempty=True)),
    "containerRegistries": Arr(REGISTRY),
}, required=("type",))
VM_CONFIGURATION = Obj({
    "imageReference": Obj({
        "publisher": Str(), "offer": Str(), "sku": Str(), "version": Str(),
        "virtualMachineImageId": Str(), "sharedGalleryImageId": Str(), "communityGalleryImageId": Str(),
    }),
    "nodeAgentSKUId": Str(nonempty=True),
    "windowsConfiguration": Any_(), "dataDisks": Any_(), "licenseType": Str(),
    "containerConfiguration": CONTAINER_CONFIGURATION,
    "diskEncryptionConfiguration": Any_(), "nodePlacementConfiguration": Any_(), "extensions": Any_(),
    "osDisk": Any_(), "securityProfile": Any_(), "serviceArtifactReference": Any_(),
}, required=("imageReference", "nodeAgentSKUId"))

POOL_CREATE = Obj({
    "id": Id(), "displayName": DISPLAY_NAME, "vmSize": Str(nonempty=True),
    "virtualMachineConfiguration": VM_CONFIGURATION,
    "resizeTimeout": Duration(),
    "targetDedicatedNodes": Int(0), "targetLowPriorityNodes": Int(0),
    "enableAutoScale": Bool(), "autoScaleFormula": Str(), "autoScaleEvaluationInterval": Duration(),
    "enableInterNodeCommunication": Bool(), "networkConfiguration": Any_(), "startTask": Any_(),
    "applicationPackageReferences": Any_(),
    "taskSlotsPerNode": Int(1, 256),
    "taskSchedulingPolicy": Obj({"nodeFillType": Enum("spread", "pack"),
                                 "jobDefaultOrder": Enum("none", "creationtime")}, required=("nodeFillType",)),
    "userAccounts": Any_(), "metadata": Arr(METADATA_ITEM), "mountConfiguration": Any_(),
    "upgradePolicy": Any_(),
}, required=("id", "vmSize", "virtualMachineConfiguration"))

POOL_RESIZE = Obj({
    "targetDedicatedNodes": Int(0), "targetLowPriorityNodes": Int(0), "resizeTimeout": Duration(),
    "nodeDeallocationOption": Enum("requeue", "terminate", "taskcompletion", "retaineddata"),
})

JOB_CONSTRAINTS = Obj({"maxWallClockTime": Duration(), "maxTaskRetryCount": Int(-1)})
JOB_POOL_INFO = Obj({"poolId": Id(), "autoPoolSpecification": Any_()}, rule=_job_pool_info_rule)
ALL_TASKS_COMPLETE = Enum("noaction", "terminatejob")

JOB_CREATE = Obj({
    "id": Id(), "displayName": DISPLAY_NAME, "usesTaskDependencies": Bool(),
    "priority": Int(-1000, 1000), "allowTaskPreemption": Bool(), "maxParallelTasks": Int(),
    "constraints": JOB_CONSTRAINTS,
    "jobManagerTask": Any_(), "jobPreparationTask": Any_(), "jobReleaseTask": Any_(),
    "commonEnvironmentSettings": Arr(ENVIRONMENT_SETTING),
    "poolInfo": JOB_POOL_INFO,
    "onAllTasksComplete": ALL_TASKS_COMPLETE,
    "onTaskFailure": Enum("noaction", "performexitoptionsjobaction"),
    "networkConfiguration": Any_(), "metadata": Arr(METADATA_ITEM),
}, required=("id", "poolInfo"), rule=_max_parallel_rule)

JOB_UPDATE = Obj({
    "priority": Int(-1000, 1000), "allowTaskPreemption": Bool(), "maxParallelTasks": Int(),
    "constraints": JOB_CONSTRAINTS, "poolInfo": JOB_POOL_INFO,
    "onAllTasksComplete": ALL_TASKS_COMPLETE, "metadata": Arr(METADATA_ITEM),
    "networkConfiguration": Any_(),
}, rule=_max_parallel_rule)

JOB_TERMINATE = Obj({"terminateReason": Str(max_len=1024)})

RESOURCE_FILE = Obj({
    "autoStorageContainerName": Str(), "storageContainerUrl": Url(), "httpUrl": Url(),
    "blobPrefix": Str(), "filePath": Str(nonempty=True), "fileMode": Str(), "identityReference": Any_(),
}, rule=_resource_file_rule)

OUTPUT_FILE = Obj({
    "filePattern": Str(nonempty=True),
    "destination": Obj({
        "container": Obj({
            "path": Str(), "containerUrl": Url(), "identityReference": Any_(), "uploadHeaders": Any_(),
        }, required=("containerUrl",)),
    }, required=("container",)),
    "uploadOptions": Obj({
        "uploadCondition": Enum("tasksuccess", "taskfailure", "taskcompletion"),
    }, required=("uploadCondition",)),
}, required=("filePattern", "destination", "uploadOptions"))

TASK_CONTAINER_SETTINGS = Obj({
    "containerRunOptions": Str(), "imageName": Str(nonempty=True), "registry": REGISTRY,
    "workingDirectory": Enum("taskWorkingDirectory", "containerImageDefault"),
    "containerHostBatchBindMounts": Any_(),
}, required=("imageName",))

TASK_CONSTRAINTS = Obj({
    "maxWallClockTime": Duration(), "retentionTime": Duration(), "maxTaskRetryCount": Int(-1),
})

TASK_CREATE = Obj({
    "id": Id(), "displayName": DISPLAY_NAME, "exitConditions": Any_(),
    "commandLine": Str(nonempty=True),
    "containerSettings": TASK_CONTAINER_SETTINGS,
    "resourceFiles": Arr(RESOURCE_FILE), "outputFiles": Arr(OUTPUT_FILE),
    "environmentSettings": Arr(ENVIRONMENT_SETTING),
    "affinityInfo": Any_(), "constraints": TASK_CONSTRAINTS,
    "requiredSlots": Int(1), "userIdentity": Any_(), "multiInstanceSettings": Any_(),
    "dependsOn": Any_(), "applicationPackageReferences": Any_(), "authenticationTokenSettings": Any_(),
}, required=("id", "commandLine"))

# The collection's size limits (100 tasks, 1 MB) answer 413, not 400, so the
# list itself is checked by the caller before the items are validated.
TASK_GROUP = Obj({"value": Arr(Any_())}, required=("value",))
MAX_TASKS_PER_COLLECTION = 100
MAX_COLLECTION_BODY_BYTES = 1024 * 1024

# The job preparation task (state/jobprep.py), checked as a task is; set here
# because it uses the task types defined above.
JOB_CREATE.props["jobPreparationTask"] = Obj({
    "id": Id(), "commandLine": Str(nonempty=True), "containerSettings": TASK_CONTAINER_SETTINGS,
    "resourceFiles": Arr(RESOURCE_FILE), "environmentSettings": Arr(ENVIRONMENT_SETTING),
    "constraints": TASK_CONSTRAINTS, "waitForSuccess": Bool(), "userIdentity": Any_(),
    "rerunOnNodeRebootAfterSuccess": Bool(),
}, required=("commandLine",))
