"""What the Batch service's error codes mean to a user of the kit, and what to do.

azure-batch 15.1 raises ResourceExistsError for every HTTP 409, and only
three of the service's 409 codes mean "it is there already" (Batch error
codes: https://learn.microsoft.com/rest/api/batchservice/batch-status-and-error-codes).
Every other code becomes one line that names the cause and the way out.
"""

from ...errors import SuperbatchError
from ...redact import redact
from .clients import error_code, explain

EXISTS = {"PoolExists", "JobExists", "TaskExists"}

QUOTA_HELP = ("request more in the Azure portal (your Batch account > Quotas > Request quota increase; "
              "https://learn.microsoft.com/azure/batch/batch-quota-limit)")

# code -> (what happened, what to do); {pool}, {job} and {account} are filled in.
ADVICE = {
    "PoolQuotaReached": ("the Batch account {account!r} has as many pools as its quota allows",
                         "reuse one with --pool-id, delete one you no longer need (az batch pool list), or " + QUOTA_HELP),
    "ActiveJobAndScheduleQuotaReached": ("the Batch account {account!r} has as many active jobs as its quota allows",
                                         "end finished jobs (az batch job list --query \"[?state=='active'].id\", then "
                                         "az batch job stop --job-id ID), or " + QUOTA_HELP),
    "PoolBeingDeleted": ("the pool {pool!r} is being deleted", "wait until it is gone, or choose another --pool-id"),
    "JobBeingDeleted": ("the job {job!r} is being deleted", "rerun once it is gone"),
    "JobBeingTerminated": ("the job {job!r} is being terminated", "rerun once it has completed"),
    "JobCompleted": ("the job {job!r} has completed and takes no more tasks", "rerun: the kit starts a new job"),
    "PoolNotFound": ("the pool {pool!r} does not exist", "check --pool-id, or let the kit create it"),
    "InvalidPropertyValue": ("the service refused a value", "check the flags of the pool (--vm-size, --vm-image, --node-agent-sku, --subnet-id)"),
}


def is_exists(error: Exception) -> bool:
    return error_code(error) in EXISTS


def batch_error(error: Exception, doing: str, pool: str = "", job: str = "", account: str = "") -> SuperbatchError:
    """One line for a Batch error met while `doing`: by its code when the kit knows it."""
    code = error_code(error)
    advice = ADVICE.get(code)
    if advice is None:
        failure = explain(error, doing)
    else:
        what, todo = (part.format(pool=pool, job=job, account=account) for part in advice)
        failure = SuperbatchError(redact(f"{doing} failed: {code}: {what}; {todo}"))
    failure.code = code  # for callers that wait some codes out (PoolBeingDeleted)
    return failure

