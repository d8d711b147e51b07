"""Routes: which handler serves which Batch operation.

Each route names the operation as the REST API description does (that name
is also the key of the request counters). Anything not listed answers 404
with Batch's error body rather than Starlette's default page.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import exceptions as exc
from .responses import BatchResponses

# path -> {method: (operation, handler name)}
URLS = {
    "/supportedimages": {"GET": ("Pools_ListSupportedImages", "list_supported_images")},
    "/pools": {
        "GET": ("Pools_ListPools", "list_pools"),
        "POST": ("Pools_CreatePool", "create_pool"),
    },
    "/pools/{poolId}": {
        "GET": ("Pools_GetPool", "get_pool"),
        "HEAD": ("Pools_PoolExists", "pool_exists"),
        "DELETE": ("Pools_DeletePool", "delete_pool"),
    },
    "/pools/{poolId}/resize": {"POST": ("Pools_ResizePool", "resize_pool")},
    "/pools/{poolId}/enableautoscale": {"POST": ("Pools_EnablePoolAutoScale", "enable_autoscale")},
    "/pools/{poolId}/disableautoscale": {"POST": ("Pools_DisablePoolAutoScale", "disable_autoscale")},
    "/pools/{poolId}/evaluateautoscale": {"POST": ("Pools_EvaluatePoolAutoScale", "evaluate_autoscale")},
    "/pools/{poolId}/nodes": {"GET": ("Nodes_ListNodes", "list_nodes")},
    "/pools/{poolId}/nodes/{nodeId}": {"GET": ("Nodes_GetNode", "get_node")},
    "/jobs": {
        "GET": ("Jobs_ListJobs", "list_jobs"),
        "POST": ("Jobs_CreateJob", "create_job"),
    },
    "/jobs/{jobId}": {
        "GET": ("Jobs_GetJob", "get_job"),
        "PATCH": ("Jobs_UpdateJob", "update_job"),
        "DELETE": ("Jobs_DeleteJob", "delete_job"),
    },
    "/jobs/{jobId}/terminate": {"POST": ("Jobs_TerminateJob", "terminate_job")},
    "/jobs/{jobId}/jobpreparationandreleasetaskstatus": {
        "GET": ("Jobs_ListJobPreparationAndReleaseTaskStatus", "list_prep_status")},
    "/jobs/{jobId}/taskcounts": {"GET": ("Jobs_GetJobTaskCounts", "task_counts")},
    "/jobs/{jobId}/addtaskcollection": {"POST": ("Tasks_CreateTaskCollection", "create_task_collection")},
    "/jobs/{jobId}/tasks": {
        "GET": ("Tasks_ListTasks", "list_tasks"),
        "POST": ("Tasks_CreateTask", "create_task"),
    },
    "/jobs/{jobId}/tasks/{taskId}": {
        "GET": ("Tasks_GetTask", "get_task"),
        "DELETE": ("Tasks_DeleteTask", "delete_task"),
    },
    "/jobs/{jobId}/tasks/{taskId}/terminate": {"POST": ("Tasks_TerminateTask", "terminate_task")},
    "/jobs/{jobId}/tasks/{taskId}/reactivate": {"POST": ("Tasks_ReactivateTask", "reactivate_task")},
    "/jobs/{jobId}/tasks/{taskId}/files": {"GET": ("Tasks_ListTaskFiles", "list_task_files")},
    "/jobs/{jobId}/tasks/{taskId}/files/{filePath:path}": {
        "GET": ("Tasks_GetTaskFile", "get_task_file"),
        "HEAD": ("Tasks_GetTaskFileProperties", "get_task_file_properties"),
    },
}


def build_app(responses: BatchResponses) -> Starlette:
    routes = [Route("/_emulator/stats", responses.stats, methods=["GET", "DELETE"])]
    for path, methods in URLS.items():
        # One route per path that picks the handler by method itself:
        # Starlette would otherwise let a GET route answer HEAD requests.
        handlers = {m: responses.endpoint(op, getattr(responses, name)) for m, (op, name) in methods.items()}
        routes.append(Route(path, _by_method(handlers, responses), methods=list(handlers)))

    async def not_found(request: Request, _exc) -> Response:
        e = exc.ResourceNotFound() if _exc.status_code == 404 else exc.UnsupportedOperation()
        response = responses.error(request, e)
        responses.backend.stats.request("Unknown", response.status_code)
        return response

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


def _by_method(handlers: dict, responses: BatchResponses):
    async def endpoint(request: Request) -> Response:
        handler = handlers.get(request.method)
        if handler is None:
            response = responses.error(request, exc.UnsupportedOperation())
            responses.backend.stats.request("Unknown", response.status_code)
            return response
        return await handler(request)

    return endpoint
