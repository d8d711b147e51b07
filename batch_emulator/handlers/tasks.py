"""Tasks over HTTP, the task collection included."""

from __future__ import annotations

from .. import exceptions as exc
from .. import odata
from ..state.common import iso
from ..state.tasks import TASK_FIELDS


class TaskHandlers:
    def create_task(self, request, body):
        job_id = request.path_params["jobId"]
        task = self.backend.add_task(job_id, self.parse_json(body))
        return self.empty(request, 201, etag=task.etag, modified=task.modified,
                          data_service_id=f"{self._base()}/jobs/{task.job.id}/tasks/{task.id}")

    def create_task_collection(self, request, body):
        from ..schemas import MAX_COLLECTION_BODY_BYTES

        if len(body) > MAX_COLLECTION_BODY_BYTES:
            raise exc.RequestBodyTooLarge(values={
                "Reason": f"The body holds {len(body)} bytes; at most {MAX_COLLECTION_BODY_BYTES} are allowed."})
        job_id = request.path_params["jobId"]
        results = self.backend.add_task_collection(job_id, self.parse_json(body))
        out = []
        for r in results:
            if r["status"] == "success":
                task = r["task"]
                out.append({"status": "success", "taskId": task.id, "eTag": task.etag,
                            "lastModified": iso(task.modified),
                            "location": f"{self._base()}/jobs/{task.job.id}/tasks/{task.id}"})
            else:
                e = r["error"]
                out.append({"status": r["status"], "taskId": r["taskId"],
                            "error": {"code": e.code, "message": {"lang": "en-US", "value": e.message},
                                      **({"values": [{"key": k, "value": v} for k, v in e.values.items()]}
                                         if e.values else {})}})
        return self.json(request, {"odata.metadata": f"{self._base()}/$metadata#taskaddresult", "value": out})

    def list_tasks(self, request, body):
        tasks = self.backend.list_tasks(request.path_params["jobId"])   # creation order
        return self.page(request, tasks, TASK_FIELDS, self.backend.task_json, "tasks")

    def get_task(self, request, body):
        with self.backend.lock:
            task = self.backend.get_task(request.path_params["jobId"], request.path_params["taskId"])
            out = odata.select(self.backend.task_json(task), odata.parse_select(request.query_params.get("$select")))
        out["odata.metadata"] = f"{self._base()}/$metadata#tasks/@Element"
        return self.json(request, out, etag=task.etag, modified=task.modified,
                         data_service_id=f"{self._base()}/jobs/{task.job.id}/tasks/{task.id}")

    def terminate_task(self, request, body):
        self.backend.terminate_task(request.path_params["jobId"], request.path_params["taskId"])
        task = self.backend.get_task(request.path_params["jobId"], request.path_params["taskId"])
        return self.empty(request, 204, etag=task.etag, modified=task.modified,
                          data_service_id=f"{self._base()}/jobs/{task.job.id}/tasks/{task.id}/terminate")

    def reactivate_task(self, request, body):
        task = self.backend.reactivate_task(request.path_params["jobId"], request.path_params["taskId"])
        return self.empty(request, 204, etag=task.etag, modified=task.modified,
                          data_service_id=f"{self._base()}/jobs/{task.job.id}/tasks/{task.id}/reactivate")

    def delete_task(self, request, body):
        self.backend.delete_task(request.path_params["jobId"], request.path_params["taskId"])
        return self.empty(request, 200)
