"""Jobs over HTTP."""

from __future__ import annotations

from .. import odata
from ..state.jobprep import PREP_FIELDS
from ..state.jobs import JOB_FIELDS


class JobHandlers:
    def create_job(self, request, body):
        job = self.backend.create_job(self.parse_json(body))
        return self.empty(request, 201, etag=job.etag, modified=job.modified,
                          data_service_id=f"{self._base()}/jobs/{job.id}")

    def list_jobs(self, request, body):
        jobs = sorted(self.backend.list_jobs(), key=lambda j: j.seq)
        return self.page(request, jobs, JOB_FIELDS, self.backend.job_json, "jobs")

    def get_job(self, request, body):
        with self.backend.lock:
            job = self.backend.get_job(request.path_params["jobId"])
            out = odata.select(self.backend.job_json(job), odata.parse_select(request.query_params.get("$select")))
        out["odata.metadata"] = f"{self._base()}/$metadata#jobs/@Element"
        return self.json(request, out, etag=job.etag, modified=job.modified)

    def update_job(self, request, body):
        job = self.backend.update_job(request.path_params["jobId"], self.parse_json(body))
        return self.empty(request, 200, etag=job.etag, modified=job.modified,
                          data_service_id=f"{self._base()}/jobs/{job.id}")

    def terminate_job(self, request, body):
        self.backend.terminate_job(request.path_params["jobId"], self.parse_json(body))
        job = self.backend.get_job(request.path_params["jobId"])
        return self.empty(request, 202, etag=job.etag, modified=job.modified,
                          data_service_id=f"{self._base()}/jobs/{job.id}/terminate")

    def delete_job(self, request, body):
        self.backend.delete_job(request.path_params["jobId"])
        return self.empty(request, 202)

    def task_counts(self, request, body):
        counts = self.backend.task_counts(request.path_params["jobId"])
        counts["odata.metadata"] = f"{self._base()}/$metadata#taskcountsresult/@Element"   # as recorded
        return self.json(request, counts)

    def list_prep_status(self, request, body):
        runs = self.backend.list_prep_status(request.path_params["jobId"])
        return self.page(request, runs, PREP_FIELDS, self.backend.prep_status_json,
                         "jobpreparationandreleasetaskstatuslist")
