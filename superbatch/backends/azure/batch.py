"""Azure Batch: the pool, the run's job, its tasks, and following them cheaply."""

import itertools
import time
from datetime import datetime, timedelta
from typing import Iterator, Optional

from azure.batch import BatchClient, models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError, ServiceRequestError, ServiceResponseError

from .clients import error_code, explain, transport
from .codes import batch_error, is_exists
from .elastic import pool_options
from .settings import AzureSettings

# Only what following the tasks (and the run report: node, creation) needs, so a page of 1000 tasks stays small.
TASK_FIELDS = ["id", "state", "stateTransitionTime", "executionInfo", "nodeInfo", "creationTime"]


class BatchService:
    def __init__(self, settings: AzureSettings):
        self.settings = settings
        if settings.batch_key:
            credential = AzureNamedKeyCredential(settings.batch_account, settings.batch_key)
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self.client = BatchClient(settings.batch_endpoint, credential, transport=transport(settings.threads), retry_total=6)

    def check(self) -> bool:
        """Reach the account with its credentials; returns whether the pool exists. Creates nothing."""
        try:
            return self.client.pool_exists(self.settings.pool_id)
        except ResourceNotFoundError:
            # azure-batch 15.1's error policy raises on the 404 that means "no
            # such pool" before pool_exists can return False.
            return False
        except Exception as error:
            raise explain(error, f"reaching Batch account {self.settings.batch_account!r}", "check BATCH_ACCOUNT_* variables") from None

    # --- pool and job --------------------------------------------------------

    def create_pool(self) -> bool:
        """Create the pool unless it exists; returns whether this call created it."""
        s = self.settings
        registries = None
        if s.registry_server:
            registries = [models.ContainerRegistryReference(registry_server=s.registry_server, username=s.registry_username, password=s.registry_password)]
        publisher, offer, sku, *version = s.vm_image
        pool = models.BatchPoolCreateOptions(
            id=s.pool_id,
            vm_size=s.vm_size,
            **pool_options(s, fixed=s.fixed_pool),  # autoscale formula or fixed targets, and the kit's metadata mark
            task_slots_per_node=s.task_slots,
            virtual_machine_configuration=models.VirtualMachineConfiguration(
                image_reference=models.BatchVmImageReference(publisher=publisher, offer=offer, sku=sku, version=version[0] if version else "latest"),
                node_agent_sku_id=s.node_agent_sku,
                container_configuration=models.BatchContainerConfiguration(
                    type=models.ContainerType.DOCKER_COMPATIBLE,
                    container_image_names=[s.image],  # pulled as each node starts, not by the first task
                    container_registries=registries,
                ),
            ),
            network_configuration=models.NetworkConfiguration(subnet_id=s.subnet_id) if s.subnet_id else None,
        )
        return self._created_unless_exists(lambda: self.client.create_pool(pool), f"creating pool {s.pool_id!r}")

    def create_job(self, job_id: str, preparation: Optional[models.BatchJobPreparationTask] = None) -> bool:
        """Create the run's job unless it exists (a resumed run); returns whether it was created."""
        job = models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=self.settings.pool_id),
                                           job_preparation_task=preparation)
        return self._created_unless_exists(lambda: self.client.create_job(job), f"creating job {job_id!r}", job=job_id)

    def get_pool(self, select: Optional[list] = None) -> Optional[models.BatchPool]:
        """The pool (only the `select`ed fields), None when it does not exist."""
        try:
            return self.client.get_pool(self.settings.pool_id, select=select)
        except ResourceNotFoundError:
            return None
        except Exception as error:
            raise batch_error(error, f"reading pool {self.settings.pool_id!r}", pool=self.settings.pool_id) from None

    def list_node_states(self, limit: int = 1000) -> list:
        """The pool's nodes (state, errors), one request: the first page only."""
        try:
            pages = self.client.list_nodes(self.settings.pool_id, select=["id", "state", "isDedicated", "errors"],
                                           max_results=limit).by_page()
            return list(next(pages, []))
        except ResourceNotFoundError:
            return []
        except Exception as error:
            raise batch_error(error, f"reading the nodes of pool {self.settings.pool_id!r}", pool=self.settings.pool_id) from None

    def job_state(self, job_id: str) -> Optional[str]:
        """The job's state (active, terminating, completed, deleting...), None when there is no such job."""
        try:
            state = self.client.get_job(job_id, select=["state"]).state
        except ResourceNotFoundError:
            return None
        except Exception as error:
            raise batch_error(error, f"reading job {job_id!r}", job=job_id) from None
        return str(getattr(state, "value", state))

    def _created_unless_exists(self, create, doing: str, job: str = "") -> bool:
        """Run a create call; False when it already exists (a resumed run, a shared
        pool). Only the service's ...Exists codes mean that: every other 409
        (a quota reached, a pool being deleted) is an error of its own."""
        try:
            create()
            return True
        except Exception as error:
            if is_exists(error):
                return False
            raise batch_error(error, doing, pool=self.settings.pool_id, job=job, account=self.settings.batch_account) from None

    # The begin_* operations below send their request at once; we do not wait
    # for the service to finish terminating or deleting (minutes, in the cloud).

    def terminate_job(self, job_id: str, reason: str) -> None:
        try:
            # azure-batch 15.1 needs a body here but does not export its model: the REST field as JSON.
            self.client.begin_terminate_job(job_id, {"terminateReason": reason})
        except ResourceNotFoundError:
            pass
        except ResourceExistsError as error:
            # Already ending or ended: nothing to do. Anything else is worth a line.
            if error_code(error) not in ("JobCompleted", "JobBeingTerminated", "JobBeingDeleted"):
                raise batch_error(error, f"ending job {job_id!r}", job=job_id) from None

    def delete_job(self, job_id: str) -> None:
        try:
            self.client.begin_delete_job(job_id)
        except ResourceNotFoundError:
            pass

    def delete_pool(self) -> None:
        try:
            self.client.begin_delete_pool(self.settings.pool_id)
        except ResourceNotFoundError:
            pass

    # --- tasks ---------------------------------------------------------------

    def add_tasks(self, job_id: str, tasks: list, attempts: int = 5) -> None:
        """Add tasks; one that already exists (a retried request, a resumed run) counts as added.

        A request whose answer is lost (a reset connection, a timeout) may or
        may not have added its tasks, and azure-core does not retry a POST;
        azure-batch 15.1's create_tasks may even return without a word when
        one of its threads dies that way. So the tasks that were not
        acknowledged are added again: those that exist answer TaskExists.
        """
        pending = tasks
        for attempt in range(1, attempts + 1):
            try:
                result = self.client.create_tasks(job_id, pending, max_concurrency=min(8, self.settings.threads))
                acknowledged = {answer.task_id for answer in result.result_values or []}
                pending = [task for task in pending if task.id not in acknowledged]
                if not pending:
                    return
                cause = Exception(f"{len(pending)} tasks were not acknowledged")
            except models.CreateTasksError as error:
                failures = [f"{answer.task_id}: {answer.error.code}" for answer in error.failure_tasks if answer.error]
                if failures:
                    raise explain(Exception(f"{len(failures)} tasks refused, first {failures[0]}"), f"adding tasks to job {job_id!r}") from None
                cause = error.errors[0] if error.errors else error
                if not isinstance(cause, (ServiceRequestError, ServiceResponseError)):
                    raise explain(cause, f"adding tasks to job {job_id!r}") from None
            except (ServiceRequestError, ServiceResponseError) as error:
                cause = error
            if attempt < attempts:
                time.sleep(min(2 ** attempt, 30))
        raise explain(cause, f"adding tasks to job {job_id!r}") from None

    def waiting_tasks(self, job_id: str) -> list:
        """Ids of the job's tasks that have not started (active)."""
        return [task.id for task in self.client.list_tasks(job_id, filter="state eq 'active'", select=["id"], max_results=1000)]

    def delete_task(self, job_id: str, task_id: str) -> None:
        try:
            self.client.delete_task(job_id, task_id)
        except ResourceNotFoundError:
            pass

    def preparation_status(self, job_id: str) -> list:
        """The job preparation task's status on each node that ran it (its first page)."""
        return list(itertools.islice(self.client.list_job_preparation_and_release_task_status(job_id, max_results=100), 100))

    def task_counts(self, job_id: str) -> models.BatchTaskCounts:
        return self.client.get_job_task_counts(job_id).task_counts

    def completed_tasks(self, job_id: str, since: Optional[datetime]) -> Iterator[models.BatchTask]:
        """The job's completed tasks, only those that changed after `since` when given."""
        condition = "state eq 'completed'"
        if since is not None:
            condition += f" and stateTransitionTime gt datetime'{since.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"
        return self.client.list_tasks(job_id, filter=condition, select=TASK_FIELDS, max_results=1000)

    def node_counts(self) -> Optional[dict]:
        """The pool's current dedicated and spot node counts (one small GET), for the run report."""
        try:
            pool = self.client.get_pool(self.settings.pool_id, select=["currentDedicatedNodes", "currentLowPriorityNodes"])
        except Exception:
            return None  # the report goes without this sample; the run itself does not depend on it
        return {"dedicated": pool.current_dedicated_nodes or 0, "spot": pool.current_low_priority_nodes or 0}

    def stderr_tail(self, job_id: str, task_id: str, limit: int = 64 * 1024) -> str:
        """The end of a task's stderr.txt, or why it cannot be read."""
        try:
            data = b"".join(self.client.download_task_file(job_id, task_id, "stderr.txt"))
        except Exception as error:
            return f"(stderr.txt unavailable: {type(error).__name__})"
        return data[-limit:].decode(errors="replace")


def failure_text(info: Optional[models.BatchTaskExecutionInfo]) -> str:
    """Batch's account of a failure: category, code and message."""
    if info is None or info.failure_info is None:
        return ""
    failure = info.failure_info
    category = getattr(failure.category, "value", failure.category)  # the SDK's enum, as the REST API spells it
    return f"{category} {failure.code}: {failure.message}".strip()


def task_spans(task: models.BatchTask) -> list:
    """The task's attempts for the run report. Batch gives the times and node of
    the last attempt only; the earlier ones (retryCount, requeueCount) are known
    to lie between the task's creation and that start, on nodes it does not name."""
    from ..base import span

    info = task.execution_info
    if info is None:
        return []
    start = info.start_time.timestamp() if info.start_time else None
    end = info.end_time.timestamp() if info.end_time else None
    created = task.creation_time.timestamp() if task.creation_time else None
    where = task.node_info.node_id if task.node_info is not None and task.node_info.node_id else "node unknown"
    earlier = [span(created, start, "", "retried") for _ in range(info.retry_count or 0)]
    earlier += [span(created, start, "", "requeued") for _ in range(info.requeue_count or 0)]
    outcome = "succeeded" if info.result == "success" else "failed"
    return earlier + [span(start, end, where, outcome)]


def margin_before(moment: datetime) -> datetime:
    # Tasks that complete at nearly the same moment may show up in the listing
    # out of order; asking again a little before the last one seen catches them.
    return moment - timedelta(seconds=2)
