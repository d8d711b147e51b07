"""The azure backend: blob staging, a Batch pool and job, tasks followed cheaply.

    submit   upload the inputs that are not in blob storage yet; create the
             pool (unless it exists) and the run's job (unless it exists);
             on a resumed run, list the job's completed tasks once; add the
             tasks that were never added
    follow   each poll: the job's task counts, then, only when the completed
             count moved, the tasks completed since the last one seen
             ($filter on stateTransitionTime, $select of four fields)
    fetch    download task_<i>_output.pickle from the run's blob container

The journal keeps the job id, the pool, the container and which tasks were
added; blob metadata keeps which inputs were uploaded. Neither holds a secret.
The Azure SDKs are imported only when this backend is used.
"""

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

from constants import GLOBAL_CONFIG_FILE, LOCAL_OUTPUT_PATTERN, LOCAL_RESOURCE_PATTERN, TASK_OUTPUT_FILE, TASK_RESOURCE_FILE

from ...errors import SuperbatchError, UsageError
from ...progress import say
from ...redact import redact
from ..base import Backend, TaskEnd, TaskStates, tail
from . import settings as settings_module
from .ranges import add_range, contains, from_sorted


class AzureBackend(Backend):
    name = "azure"

    @classmethod
    def add_arguments(cls, group) -> None:
        settings_module.add_arguments(group)

    # --- before anything is created ---------------------------------------------

    def check(self) -> None:
        from .batch import BatchService
        from .storage import BlobStore

        self.settings = settings_module.AzureSettings.from_environment(self.options, self.run.name)
        self.store = BlobStore(self.settings)
        self.batch = BatchService(self.settings)
        self.pool_exists = self.batch.check()
        self.store.check()
        self.state = self.run.backend_state(self.name)
        self._choose_job()
        self.job_id = self.state.get("job_id") or self.job_id  # --cancel stops the job that was created
        self.ended_early: list = []  # tasks found completed when a resumed run reattached
        self.completed_seen = 0  # the job's completed-task count we have listed up to
        self.since = None  # the latest state transition among the completed tasks listed
        self.counts = None

    def _choose_job(self) -> None:
        """The job and blob prefix of the run's staging generation.

        A task cannot change once added to a job (its inputs' SAS URLs, where
        its output goes), so inputs restaged with --restage get a job and a
        blob prefix of their own. Staging raises the generation after check(),
        so submit() chooses again.
        """
        generation = self.run.journal.get("generation", 0)
        suffix = f"-g{generation}" if generation else ""
        self.job_id = f"superbatch-{self.run.name}{suffix}"
        self.prefix = f"{self.run.name}{suffix}/"

    def _leave_old_generation(self) -> None:
        """After --restage: forget what the journal says of the old job, and end it."""
        generation = self.run.journal.get("generation", 0)
        if self.state.get("generation", 0) == generation:
            return
        old_job = self.state.get("job_id")
        if old_job and old_job != self.job_id:
            self._say(f"ending job {old_job}: its tasks were staged from the old task.py")
            self.batch.terminate_job(old_job, "superbatch: the run was restaged")
        for key in ("added", "uploaded"):
            self.state.pop(key, None)
        self._save_state(generation=generation, job_id=self.job_id)

    def _save_state(self, **changes) -> None:
        self.state.update(changes)
        self.run.save()

    # --- submit ----------------------------------------------------------------

    def submit(self, indices: Sequence[int]) -> None:
        self.pending = list(indices)
        self._choose_job()
        self._leave_old_generation()
        started = time.perf_counter()
        self._upload_inputs()
        self.phases["upload"] = round(time.perf_counter() - started, 4)

        started = time.perf_counter()
        if not self.pool_exists:
            self._say(f"creating pool {self.settings.pool_id} ({self.settings.dedicated_nodes} dedicated, {self.settings.spot_nodes} spot {self.settings.vm_size} nodes)")
            created = self.batch.create_pool()
            self._save_state(pool_created=created or self.state.get("pool_created", False))
        self._save_state(pool_id=self.settings.pool_id, container=self.settings.container, job_id=self.job_id,
                         generation=self.run.journal.get("generation", 0))
        new_job = self.batch.create_job(self.job_id)
        if not new_job:
            self._reattach()
        self._add_tasks([index for index in self.pending if not contains(self.state.get("added", []), index)])
        self.phases["submit"] = round(time.perf_counter() - started, 4)

    def _upload_inputs(self) -> None:
        """Upload the staged files that blob storage does not hold yet, with their content hashes."""
        inputs = self.run.journal["inputs"]
        folder = str(self.run.path)  # paths as strings: 20,000 Path objects weigh 7 MB
        names = [(self.prefix + GLOBAL_CONFIG_FILE, str(self.run.config_path), inputs["config"])]
        names += [(self.prefix + LOCAL_RESOURCE_PATTERN.format(i), os.path.join(folder, LOCAL_RESOURCE_PATTERN.format(i)), digest)
                  for i, digest in enumerate(inputs["tasks"])]
        if self.state.get("uploaded") == content_fingerprint(names):
            return  # every input is there already (the journal says so)
        self.store.create_container()
        there = self.store.staged_hashes(self.prefix)
        missing = [item for item in names if there.get(item[0]) != item[2]]
        if missing:
            self._say(f"uploading {len(missing)} inputs to container {self.settings.container}")
            self.store.upload_files(missing)
        self._save_state(uploaded=content_fingerprint(names))

    def _reattach(self) -> None:
        """A resumed run: collect what completed while we were away; run failed tasks again."""
        self._say(f"reattaching to job {self.job_id}")
        waiting = set(self.pending)
        for task in self.batch.completed_tasks(self.job_id, since=None):
            self.completed_seen += 1
            if self.since is None or task.state_transition_time > self.since:
                self.since = task.state_transition_time
            index = task_index(task.id)
            if index not in waiting:
                continue
            if task.execution_info is not None and task.execution_info.result == "success":
                self.ended_early.append(TaskEnd(index, True, 0))
            else:
                self.batch.reactivate(self.job_id, task.id)  # its earlier failure is not this run's
                self.completed_seen -= 1

    def _add_tasks(self, indices: list) -> None:
        if not indices:
            return
        from .tasks import task_definition

        self._say(f"adding {len(indices)} tasks to job {self.job_id}")
        config_url = self.store.read_url(self.prefix + GLOBAL_CONFIG_FILE)
        output_url = self.store.output_url()
        chunk = 1000  # journal progress after each chunk, so a crash re-adds at most one chunk
        for start in range(0, len(indices), chunk):
            part = indices[start:start + chunk]
            tasks = [task_definition(
                task_id(self.run.name, index), self.settings, config_url,
                self.store.read_url(self.prefix + LOCAL_RESOURCE_PATTERN.format(index)),
                output_url, self.prefix + LOCAL_OUTPUT_PATTERN.format(index), self.options.retries,
            ) for index in part]
            self.batch.add_tasks(self.job_id, tasks)
            added = self.state.get("added", [])
            for first, last in from_sorted(sorted(part)):
                added = add_range(added, first, last)
            self._save_state(added=added)

    # --- follow and fetch ----------------------------------------------------------

    def follow(self) -> Iterator[Optional[TaskEnd]]:
        from .batch import failure_text, margin_before

        waiting = set(self.pending)
        for end in self.ended_early:
            waiting.discard(end.index)
            yield end
        since = margin_before(self.since) if self.since else None
        while waiting:
            polled = time.monotonic()
            counts = self.batch.task_counts(self.job_id)
            self.counts = TaskStates(pending=counts.active, running=counts.running)
            if counts.completed != self.completed_seen:  # else nothing new to list
                self.completed_seen = counts.completed
                newest = None
                for task in self.batch.completed_tasks(self.job_id, since=since):
                    if newest is None or task.state_transition_time > newest:
                        newest = task.state_transition_time
                    index = task_index(task.id)
                    if index not in waiting:
                        continue
                    waiting.discard(index)
                    yield self._task_end(index, task, failure_text)
                if newest is not None:
                    since = margin_before(newest)
            yield None
            if waiting:
                time.sleep(max(0.0, self.settings.poll_interval - (time.monotonic() - polled)))

    def _task_end(self, index: int, task, failure_text) -> TaskEnd:
        info = task.execution_info
        if info is not None and info.result == "success":
            return TaskEnd(index, True, info.exit_code, attempts=info.retry_count + 1)
        stderr = redact(self.batch.stderr_tail(self.job_id, task.id))
        log = self.run.log_path(index)
        log.parent.mkdir(exist_ok=True)
        log.write_text(stderr)
        return TaskEnd(index, False, info.exit_code if info else None, stderr_tail=tail(stderr),
                       failure_info=redact(failure_text(info)), attempts=(info.retry_count + 1) if info else 1)

    def fetch(self, index: int, destination: Path) -> None:
        self.store.download(self.prefix + LOCAL_OUTPUT_PATTERN.format(index), destination)

    def states(self) -> Optional[TaskStates]:
        return self.counts

    # --- the end -------------------------------------------------------------

    def close(self) -> None:
        if not hasattr(self, "state") or not self._all_home():
            return
        self.batch.terminate_job(self.job_id, "superbatch: every output is home")
        self._clean_up()

    def cancel(self) -> None:
        self._say(f"terminating job {self.job_id}")
        self.batch.terminate_job(self.job_id, "superbatch --cancel")
        self._clean_up()

    def _clean_up(self) -> None:
        if self.options.delete_job:
            self._say(f"deleting job {self.job_id}")
            self.batch.delete_job(self.job_id)
        if self.options.delete_pool:
            self._say(f"deleting pool {self.settings.pool_id}")
            self.batch.delete_pool()
        if self.options.delete_container:
            self._say(f"deleting blob container {self.settings.container}")
            self.store.delete_container()

    def interrupted(self) -> None:
        command = [Path(sys.argv[0]).name] if sys.argv and sys.argv[0].endswith("controller.py") else ["controller.py"]
        argv = list(getattr(self.options, "argv", []))
        if "--run" not in argv:
            argv += ["--run", self.run.name]
        resume = shlex.join(["python", *command, *argv])
        print(f"the job {self.job_id} keeps running on Azure Batch.\n  resume: {resume}\n  cancel: {resume} --cancel", file=sys.stderr)

    def _all_home(self) -> bool:
        inputs = self.run.journal.get("inputs") or {}
        return bool(inputs) and all(self.run.is_home(index) for index in range(len(inputs.get("tasks", []))))

    def _say(self, message: str) -> None:
        say(message, self.options.quiet)


def task_id(run_name: str, index: int) -> str:
    return f"{run_name}-{index}"


def task_index(task_id_: str) -> int:
    return int(task_id_.rsplit("-", 1)[1])


def content_fingerprint(names: list) -> str:
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for name, _, content in names:
        digest.update(f"{name}={content};".encode())
    return digest.hexdigest()
