"""The Batch service's own errors, as the emulator raises them.

Each error carries the HTTP status and the error code that Azure Batch answers
with, plus optional ``values`` (key/value details). The HTTP layer turns one
into Batch's error body; the same shape is used for per-task results of
``addtaskcollection``.
"""

from __future__ import annotations


class BatchError(Exception):
    status = 500
    code = "InternalServerError"
    default_message = "The server encountered an internal error. Please retry the request."

    def __init__(self, message: str | None = None, values: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None):
        self.message = message or self.default_message
        self.values = dict(values or {})
        self.headers = dict(headers or {})
        super().__init__(f"{self.code}: {self.message}")

    def body(self, metadata_url: str, request_id: str, when: str) -> dict:
        out = {
            "odata.metadata": metadata_url,
            "code": self.code,
            # The service appends the request id and time to every message.
            "message": {"lang": "en-US",
                        "value": f"{self.message}\nRequestId:{request_id}\nTime:{when}"},
        }
        if self.values:
            out["values"] = [{"key": k, "value": v} for k, v in self.values.items()]
        return out


def _error(name: str, status: int, message: str) -> type[BatchError]:
    return type(name, (BatchError,), {"status": status, "code": name, "default_message": message})


# 400
MissingRequiredProperty = _error(
    "MissingRequiredProperty", 400, "A required property was not specified in the request body.")
InvalidPropertyValue = _error(
    "InvalidPropertyValue", 400, "The value provided for one of the properties in the request body is invalid.")
InvalidRequestBody = _error(
    "InvalidRequestBody", 400, "The specified request body is not syntactically valid.")
MissingRequiredQueryParameter = _error(
    "MissingRequiredQueryParameter", 400, "A query parameter that's mandatory for this request is not specified.")
InvalidQueryParameterValue = _error(
    "InvalidQueryParameterValue", 400, "Value for one of the query parameters specified in the request URI is invalid.")
UnsupportedApiVersion = _error(
    "InvalidQueryParameterValue", 400, "The specified api-version is not supported by this emulator.")
# 401 / 403
AuthenticationFailed = _error(
    "AuthenticationFailed", 403,
    "Server failed to authenticate the request. Make sure the value of Authorization header "
    "is formed correctly including the signature.")
# Autoscale (codes: BatchErrorCodeStrings of the .NET SDK; see state/autoscale.py)
AutoScaleFormulaTooLong = _error(
    "AutoScaleFormulaTooLong", 400, "The specified autoscale formula is too long. The maximum length is 8192 characters.")
AutoScalingFormulaSyntaxError = _error(
    "AutoScalingFormulaSyntaxError", 400, "The specified autoscale formula has a syntax error.")
# 404
PoolNotFound = _error("PoolNotFound", 404, "The specified pool does not exist.")
JobNotFound = _error("JobNotFound", 404, "The specified job does not exist.")
TaskNotFound = _error("TaskNotFound", 404, "The specified task does not exist.")
FileNotFound = _error("FileNotFound", 404, "The specified file does not exist.")
NodeNotFound = _error("NodeNotFound", 404, "The specified node does not exist.")
ResourceNotFound = _error("ResourceNotFound", 404, "The specified resource does not exist.")
# 405
UnsupportedOperation = _error(
    "OperationNotSupported", 405, "The requested operation is not supported by the Batch emulator.")
# 409
PoolExists = _error("PoolExists", 409, "The specified pool already exists.")
JobExists = _error("JobExists", 409, "The specified job already exists.")
TaskExists = _error("TaskExists", 409, "The specified task already exists.")
# Named by the REST description (BatchJobPreparationTask.id, Jobs_ListJobPreparationAndReleaseTaskStatus).
TaskIdSameAsJobPreparationTask = _error(
    "TaskIdSameAsJobPreparationTask", 409, "The task id is the id of the job's job preparation task.")
JobPreparationTaskNotSpecified = _error(
    "JobPreparationTaskNotSpecified", 409, "The job has no job preparation or job release task.")
PoolBeingDeleted = _error("PoolBeingDeleted", 409, "The specified pool has been marked for deletion and is being deleted.")
JobBeingDeleted = _error("JobBeingDeleted", 409, "The specified job has been marked for deletion and is being deleted.")
JobCompleted = _error("JobCompleted", 409, "The specified job is already in a completed state.")
JobBeingTerminated = _error("JobBeingTerminated", 409, "The specified job is being terminated.")
TaskCompleted = _error("TaskCompleted", 409, "The specified task is already in a completed state.")
TaskNotCompleted = _error("TaskNotCompleted", 409, "Only a completed task can be reactivated.")
# No code of its own is documented for reactivating a task that succeeded
# ("Tasks - Reactivate Task" only says it fails); the Batch error-code list
# (BatchErrorCodeStrings in the .NET SDK) has this one for such requests.
TaskSucceeded = _error("OperationInvalidForCurrentState", 409,
                       "The specified operation is not valid for the current state of the resource.")
# "Batch Status and Error Codes" (learn.microsoft.com/rest/api/batchservice/batch-status-and-error-codes)
PoolQuotaReached = _error("PoolQuotaReached", 409, "Pool quota for the account has been reached.")
ActiveJobAndScheduleQuotaReached = _error(
    "ActiveJobAndScheduleQuotaReached", 409, "Active job and schedule quota for the account has been reached.")
PoolNotSteady = _error("PoolNotSteady", 409, "The specified pool is not in a steady allocation state.")
PoolBeingResized = _error("PoolBeingResized", 409, "The specified pool is being resized.")
TooManyEnableAutoScaleRequests = _error(
    "TooManyEnableAutoScaleRequests", 409,
    "Enable autoscale requests for the same pool must be separated by at least 30 seconds.")
# The REST description says 409 and names no code for these two; this is the
# Batch code for an operation the resource's current state does not allow.
PoolAutoScaleEnabled = _error("OperationInvalidForCurrentState", 409,
                              "The specified pool has autoscale enabled; disable it before resizing.")
AutoScaleNotEnabled = _error("OperationInvalidForCurrentState", 409,
                             "The specified pool does not have autoscale enabled.")
# 412
ConditionNotMet = _error("ConditionNotMet", 412, "The condition specified using HTTP conditional header(s) is not met.")
# 413
RequestBodyTooLarge = _error(
    "RequestBodyTooLarge", 413,
    "The request body is too large and exceeds the maximum permissible limit.")
# 429 / 5xx
TooManyRequests = _error("TooManyRequests", 429, "The server is busy; retry the request after the given interval.")
InternalServerError = _error("InternalServerError", 500, BatchError.default_message)
ServerBusy = _error("ServerBusy", 503, "The server is currently unable to receive requests. Please retry your request.")
