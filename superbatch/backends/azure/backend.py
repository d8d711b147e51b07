"""The azure backend: blob staging, a Batch pool and job, tasks followed cheaply.

    submit   upload the inputs that are not in blob storage yet; create the
             pool (unless it exists); reattach to the run's job if it can
             still serve (same inputs, same image, still active), else start
             a new job; add the tasks that were never added to it
    follow   each poll: the job's task counts, then, only when the completed
             count moved, the tasks completed since the last one seen
             ($filter on stateTransitionTime, $select of four fields)
    fetch    download task_<i>_output.pickle (or .json) from the run's blob container
    close    end the job once every task has ended, so that finished runs do
             not hold the account's active-job quota

With worker.py, the job's preparation task brings the shared config to each
node once (tasks.config_preparation), and tasks carry chunks of iterations
(--chunk, auto by default: chunked.py); a task still ends as one TaskEnd per
iteration. Another worker (WORKER, --task-command) runs one iteration per
task with the config among its own resource files, as it expects.

A Batch task cannot change once added (command line, image, SAS URLs), and a
completed job takes no new tasks, so the kit never reactivates a task: tasks
that must run again go to a new job, with the current image and fresh SAS
URLs. The journal keeps the job, the pool, the container and which tasks were
added; blob metadata keeps which inputs were uploaded. Neither holds a secret.
"""

import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ... import chunks
from ...image import TASK_COMMAND_LINE
from ...progress import say
from ...redact import redact
from ...taskdef import IMAGE_HOME
from ..base import Backend, TaskEnd, TaskStates, tail, timed_out_text
from . import settings as settings_module
from . import sas
from . import watchdog
from .chunked import is_chunk_id
from .ranges import add_range, contains, from_sorted


NODE_SAMPLE_EVERY = 10  # polls between two reads of the pool's node count, for the run report


class AzureBackend(Backend):
    name = "azure"

    @classmethod
    def add_arguments(cls, group) -> None:
        settings_module.add_arguments(group)

    # --- before anything is created ---------------------------------------------

    def check(self) -> None:
        from .batch import BatchService
        from .storage import BlobStore

        other_worker = self.task_command(IMAGE_HOME) is not None
        self.chunk = chunks.resolve(getattr(self.options, "chunk", None), other_worker, getattr(self.options, "task_timeout", None))
        self.config_by_node = not other_worker  # the job preparation task fetches it; worker.py looks there
        if getattr(self.options, "task_command", None) is not None:
            command = self.options.task_command
        elif getattr(self.options, "tasks_on_host", False):
            # --emulate without a Docker engine: the kit's own files, run by this Python on this machine
            command = shlex.join(self.task_command(str(self.kit_dir)) or [sys.executable, str(self.kit_dir / "worker.py")])
        else:  # worker.py, or task.py's WORKER, in the image
            command = shlex.join(self.task_command(IMAGE_HOME) or shlex.split(TASK_COMMAND_LINE))
        # Under --emulate the emulated account's variables stand in for os.environ (superbatch/emulate.py).
        environ = getattr(self.options, "environ", None) or os.environ
        self.settings = settings_module.AzureSettings.from_environment(self.options, self.run.name, environ, task_command=command)
        self.store = BlobStore(self.settings)
        self.batch = BatchService(self.settings)
        self.pool_exists = self.batch.check()
        self.store.check()
        self.state = self.run.backend_state(self.name)
        self.job_id = self.state.get("job_id")  # --cancel stops the job that was created, if any
        self.prefix = self._blob_prefix()
        self.ended_early: list = []  # tasks found ended when a resumed run reattached
        self.task_times: list = []  # their executionInfo, for the cost
        self.completed_seen = 0  # the job's completed-task count we have listed up to
        self.since = None  # the latest state transition among the completed tasks listed
        self.counts = None
        self.finished = False  # every submitted task has ended: the job can end too
        self.watch = None  # the pool while following: cost and elastic pool (elastic.PoolWatch)
        self.cost = None  # the summary's "cost" once the run has ended
        self.fallback = None  # the summary's "fallback": spot nodes gave way to dedicated ones
        from .chunked import ChunkTasks

        self.chunks = ChunkTasks(self, self.chunk)  # reads the chunk tasks of any run, adds them when chunking

    def _blob_prefix(self) -> str:
        # Inputs restaged with --restage go under a prefix of their own, so a
        # task of an older job never reads the new inputs, nor writes over the new outputs.
        generation = self.run.journal.get("generation", 0)
        return f"{self.run.name}-g{generation}/" if generation else f"{self.run.name}/"

    def _save_state(self, **changes) -> None:
        self.state.update(changes)
        self.run.save()

    # --- submit ----------------------------------------------------------------

    def submit(self, indices: Sequence[int]) -> None:
        self.pending = list(indices)
        self.prefix = self._blob_prefix()  # staging may have raised the generation since check()
        started = time.perf_counter()
        self._upload_inputs()
        self.phases["upload"] = round(time.perf_counter() - started, 4)
        from .digests import task_image

        # Tasks name the image by digest: a node that cached an older image under the tag still runs this one.
        self.task_image = task_image(self.settings.image, getattr(self, "pushed", None), self.settings)

        started = time.perf_counter()
        if self.pool_exists:  # but a pool being deleted cannot serve: wait until it is gone, then create it
            self.pool_exists = watchdog.wait_until_gone(self.batch, self.settings, self._say, self.settings.poll_interval)
        if not self.pool_exists:
            sizes = f"{self.settings.dedicated_nodes} dedicated, {self.settings.spot_nodes} spot {self.settings.vm_size} nodes"
            self._say(f"creating pool {self.settings.pool_id} (" + (sizes if self.settings.fixed_pool else f"elastic: 0 to {sizes}, spot first") + ")")
            with watchdog.naming_leftovers(self.settings, self.run.name, self.options, pool_left=False):
                created = watchdog.create_pool(self.batch, self.settings, self._say, self.settings.poll_interval)
            self._save_state(pool_created=created or self.state.get("pool_created", False))
        self._save_state(pool_id=self.settings.pool_id, container=self.settings.container)
        if self._job_can_serve():
            self._reattach()
        else:
            with watchdog.naming_leftovers(self.settings, self.run.name, self.options):
                self._start_job()
        self.state.setdefault("cost_from", datetime.now(timezone.utc).isoformat())  # the cost counts from the first task added
        not_added = [index for index in self.pending if not contains(self.state.get("added", []), index)]
        if self.chunk == 1:
            self._add_tasks(not_added)
        else:
            self.chunks.send(not_added)
        self._watch_pool()
        self.phases["submit"] = round(time.perf_counter() - started, 4)

    def _job_can_serve(self) -> bool:
        """Whether the journal's job can take this run's tasks: staged from the
        same inputs, naming the same image, and still active."""
        if not self.job_id or self.state.get("generation", 0) != self.run.journal.get("generation", 0):
            return False
        if self.state.get("image") != self.task_image:
            return False  # a new image (a new digest under the same tag too): tasks go to a new job
        if self.config_by_node and sas.near(self.state, self.settings.sas_hours):
            return False  # the preparation task's SAS URL expires soon: nodes that join later could not fetch the config
        return self.batch.job_state(self.job_id) == "active"

    def _start_job(self) -> None:
        """A new job for the tasks without an output; the journal's old job, if any, is ended."""
        old_job = self.job_id
        if old_job:
            self.batch.terminate_job(old_job, "superbatch: its tasks run again in a new job")
        number = self.state.get("job_number", 0) + 1
        self.job_id = job_id(self.run.name, number)
        self._say(f"creating job {self.job_id}" + (f" (the tasks without an output; {old_job} is ended)" if old_job else ""))
        # Journal the new job (and forget what was added to the old one) before
        # creating it: a crash in between leaves a job that a rerun creates or finds.
        for key in ("added", "rounds", "chunks", sas.KEY):
            self.state.pop(key, None)
        self._save_state(job_id=self.job_id, job_number=number, generation=self.run.journal.get("generation", 0),
                         image=self.task_image)
        preparation = None
        if self.config_by_node:
            from .tasks import config_preparation

            sas.record(self.state, sas.expiry(self.settings.sas_hours))  # the preparation task's URL is the job's
            preparation = config_preparation(self.store.read_url(self.prefix + self.run.files.config), self.run.files)
        if not self.batch.create_job(self.job_id, preparation):
            self._reattach()  # created before a crash, found now

    def _upload_inputs(self) -> None:
        """Upload the staged files that blob storage does not hold yet, with their content hashes."""
        inputs = self.run.journal["inputs"]
        folder = str(self.run.path)  # paths as strings: 20,000 Path objects weigh 7 MB
        files = self.run.files
        names = [(self.prefix + files.config, str(self.run.config_path), inputs["config"])]
        if self.chunk == 1:  # else each chunk's resource file goes up with its task (chunked.py)
            names += [(self.prefix + files.local_resource.format(i), os.path.join(folder, files.local_resource.format(i)), digest)
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
        """A resumed run: collect what ended while we were away.

        A task that failed meanwhile runs again as a new task (its index with
        the next round number): a task added to Batch cannot change, and
        reactivating it would rerun it with its old SAS URLs.
        """
        self._say(f"reattaching to job {self.job_id}")
        waiting = set(self.pending)
        rounds = self.state.get("rounds", {})  # str(index) -> its latest round, for tasks added again
        again, chunks_again = [], []
        for task in self.batch.completed_tasks(self.job_id, since=None):
            self.completed_seen += 1
            if self.since is None or task.state_transition_time > self.since:
                self.since = task.state_transition_time
            if is_chunk_id(task.id):
                for end in self.chunks.ends(task, waiting):
                    waiting.discard(end.index)
                    if end.succeeded:
                        self.ended_early.append(end)
                    else:
                        chunks_again.append(end.index)
                continue
            index, round_ = task_index(task.id)
            if index not in waiting or round_ != rounds.get(str(index), 0):
                continue  # not this run's, or an attempt already superseded
            self.task_times.append(task.execution_info)
            if task.execution_info is not None and task.execution_info.result == "success":
                from .batch import task_spans

                waiting.discard(index)
                self.ended_early.append(TaskEnd(index, True, 0, attempts=task.execution_info.retry_count + 1,
                                                spans=task_spans(task), requeues=task.execution_info.requeue_count or 0))
            else:
                again.append(index)
        if again:
            self._say(f"{len(again)} tasks failed while the controller was away; they run again")
            for index in again:
                rounds[str(index)] = rounds.get(str(index), 0) + 1
            self._add_tasks(again, rounds)
            self._save_state(rounds=rounds)  # after adding: a crash before this re-adds them (TaskExists)
        if chunks_again:
            self._say(f"{len(chunks_again)} iterations failed while the controller was away; they run again")
            self.chunks.send(sorted(chunks_again))
        if sas.near(self.state, self.settings.sas_hours):
            self._renew_waiting(waiting - set(again), rounds)  # those added again just now have fresh URLs

    def _renew_waiting(self, waiting: set, rounds: dict) -> None:
        """Replace the tasks still waiting with tasks whose SAS URLs are fresh (sas.py)."""
        stale = self.batch.waiting_tasks(self.job_id)
        renew = []
        for task_id_ in stale:
            if is_chunk_id(task_id_):
                continue  # chunk tasks come with the preparation task, whose SAS moves the whole job (_job_can_serve)
            index, round_ = task_index(task_id_)
            if index in waiting and round_ == rounds.get(str(index), 0):
                renew.append(index)
        if not renew:
            return
        self._say(f"{len(renew)} waiting tasks get fresh SAS URLs (theirs expire soon)")
        for index in renew:
            self.batch.delete_task(self.job_id, task_id(self.run.name, index, rounds.get(str(index), 0)))
            rounds[str(index)] = rounds.get(str(index), 0) + 1
        self._add_tasks(renew, rounds, renewed=True)
        self._save_state(rounds=rounds)

    def _add_tasks(self, indices: list, rounds: Optional[dict] = None, renewed: bool = False) -> None:
        """Add the tasks of these indices to the job; `rounds` numbers tasks added again."""
        if not indices:
            return
        from .digests import record
        from .tasks import task_definition

        sas.record(self.state, sas.expiry(self.settings.sas_hours), renewed)  # before the URLs: never later than theirs

        self._say(f"adding {len(indices)} tasks to job {self.job_id}")
        files = self.run.files
        config_url = None if self.config_by_node else self.store.read_url(self.prefix + files.config)
        output_url = self.store.output_url()
        chunk = 1000  # journal progress after each chunk, so a crash re-adds at most one chunk
        for start in range(0, len(indices), chunk):
            part = indices[start:start + chunk]
            tasks = [task_definition(
                task_id(self.run.name, index, (rounds or {}).get(str(index), 0)), self.settings, config_url,
                self.store.read_url(self.prefix + files.local_resource.format(index)),
                output_url, self.prefix + files.local_output.format(index), self.options.retries, files, image=self.task_image,
            ) for index in part]
            self.batch.add_tasks(self.job_id, tasks)
            self.state["images"] = record(self.state.get("images", {}), self.task_image, part)  # saved below or with rounds
            if rounds is None:
                added = self.state.get("added", [])
                for first, last in from_sorted(sorted(part)):
                    added = add_range(added, first, last)
                self._save_state(added=added)

    # --- follow and fetch ----------------------------------------------------------

    def follow(self) -> Iterator[Optional[TaskEnd]]:
        from .batch import failure_text, margin_before

        waiting = set(self.pending)
        rounds = self.state.get("rounds", {})
        for end in self.ended_early:
            waiting.discard(end.index)
            yield end
        since = margin_before(self.since) if self.since else None
        polls = 0
        pool_watch = watchdog.Watchdog(self.batch, self.settings, self.run.name, self.job_id, self.options, self._say)
        pool_watch.takes_over = self.watch.takes_over if self.watch else None
        pool_watch.has_preparation = self.config_by_node
        while waiting:
            polled = time.monotonic()
            if polls % NODE_SAMPLE_EVERY == 0:
                self._sample_nodes()
            polls += 1
            counts = self.batch.task_counts(self.job_id)
            if self.watch:
                self.watch.tick(counts.active)  # before the watchdog: an elastic pool may fall back to dedicated nodes
            waiting_for = pool_watch.poll(counts.active, counts.running)  # may stop the run with a diagnosis
            self.counts = TaskStates(pending=counts.active, running=counts.running, waiting_for=waiting_for,
                                     unit="tasks" if self.chunk == 1 else "chunk tasks")
            if counts.completed != self.completed_seen:  # else nothing new to list
                self.completed_seen = counts.completed
                newest = None
                for task in self.batch.completed_tasks(self.job_id, since=since):
                    if newest is None or task.state_transition_time > newest:
                        newest = task.state_transition_time
                    for end in self._ends(task, waiting, rounds, failure_text):
                        waiting.discard(end.index)
                        yield end
                if newest is not None:
                    since = margin_before(newest)
            if self.chunks.unsized:
                self.chunks.size_the_rest()  # auto: once the first wave has been timed
            if waiting and counts.active == 0 and counts.running == 0:
                # The counts say nothing is left, yet tasks are missing: counts
                # lag the tasks, and a listing by transition time can miss one
                # that completed at the same moment. A full listing settles it.
                for task in self.batch.completed_tasks(self.job_id, since=None):
                    for end in self._ends(task, waiting, rounds, failure_text):
                        waiting.discard(end.index)
                        yield end
            yield None
            if waiting:
                time.sleep(max(0.0, self.settings.poll_interval - (time.monotonic() - polled)))
        self._sample_nodes()
        self.finished = True

    def _sample_nodes(self) -> None:
        counts = self.batch.node_counts()
        if counts is not None:
            self.node_samples.append({"t": time.time(), **counts})

    def _ends(self, task, waiting: set, rounds: dict, failure_text) -> list:
        """How the iterations of a completed task still waited for ended: one, or a chunk's."""
        if is_chunk_id(task.id):
            ends = self.chunks.ends(task, waiting)
            if ends and self.watch:
                self.watch.ledger.task(task.execution_info)
            return ends
        index, round_ = task_index(task.id)
        if index not in waiting or round_ != rounds.get(str(index), 0):
            return []  # not this run's, or an attempt already superseded
        return [self._task_end(index, task, failure_text)]

    def _task_end(self, index: int, task, failure_text) -> TaskEnd:
        from .batch import task_spans

        info = task.execution_info
        requeues = (info.requeue_count or 0) if info else 0
        if self.watch:
            self.watch.ledger.task(info)
        if info is not None and info.result == "success":
            return TaskEnd(index, True, info.exit_code, attempts=info.retry_count + 1, spans=task_spans(task), requeues=requeues)
        stderr = redact(self.batch.stderr_tail(self.job_id, task.id))
        log = self.run.log_path(index)
        log.parent.mkdir(exist_ok=True)
        log.write_text(stderr)
        from .tasks import ran_out_of_time

        timed_out = ran_out_of_time(info, self.settings.task_timeout)
        spans = task_spans(task)
        if spans and timed_out:
            spans[-1]["outcome"] = "timed out"
        return TaskEnd(index, False, info.exit_code if info else None, stderr_tail=tail(stderr),
                       failure_info=timed_out_text(self.settings.task_timeout) if timed_out else redact(failure_text(info)),
                       attempts=(info.retry_count + 1) if info else 1, timed_out=timed_out,
                       spans=spans, requeues=requeues)

    def fetch(self, index: int, destination: Path) -> None:
        if index in self.chunks.result_blob:
            self.chunks.fetch(index)  # its chunk's part, unpacked into the run folder
        else:
            self.store.download(self.prefix + self.run.files.local_output.format(index), destination)

    def states(self) -> Optional[TaskStates]:
        return self.counts

    def image_pushed(self, reference: str) -> None:
        self.pushed = reference

    def images(self) -> dict:
        from .digests import by_index

        return by_index(getattr(self, "state", {}).get("images", {}))

    # --- the end -------------------------------------------------------------

    def close(self) -> None:
        if not hasattr(self, "state") or not self.job_id:
            return
        if self.watch and (self.finished or self._all_home()):
            self.cost = self.watch.report()
        self.fallback = self.state.get("fallback")
        if self.finished or self._all_home():
            # Every task has ended: the job would otherwise stay active and
            # hold one of the account's active jobs (100 to 300 by default).
            self.batch.terminate_job(self.job_id, "superbatch: every task has ended")
        if self._all_home():
            self._clean_up()

    def _watch_pool(self) -> None:
        """Follow the pool (elastic.py, cost.py): a pool the kit made elastic
        starts now; a user's own pool is only read."""
        from .elastic import PoolWatch

        self.watch = PoolWatch(self.batch.client, self.settings, self.state, self._say)
        for info in self.task_times:  # tasks that ended while the controller was away
            self.watch.ledger.task(info)
        self.watch.started()
        self._save_state()

    def cancel(self) -> None:
        if self.job_id:
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
        where = ("waits in the emulated account, stopped with the run (runs/{}/emulated/)".format(self.run.name)
                 if getattr(self.options, "emulate", None) is not None else "keeps running on Azure Batch")
        print(f"the job {self.job_id} {where}.\n  resume: {resume}\n  cancel: {resume} --cancel", file=sys.stderr)

    def _all_home(self) -> bool:
        inputs = self.run.journal.get("inputs") or {}
        return bool(inputs) and all(self.run.is_home(index) for index in range(len(inputs.get("tasks", []))))

    def _say(self, message: str) -> None:
        say(message, self.options.quiet)


def job_id(run_name: str, number: int) -> str:
    """The id of a run's n-th job. Batch compares ids without regard to case,
    so a name with capitals carries a hash of its exact spelling; run names
    never hold "__", so the job number cannot be mistaken for part of a name."""
    return f"superbatch-{run_key(run_name)}" + (f"__{number}" if number > 1 else "")


def run_key(run_name: str) -> str:
    """The run name as Batch ids may carry it without colliding with another run's."""
    if run_name == run_name.lower():
        return run_name
    import hashlib

    return f"{run_name.lower()}-c{hashlib.blake2b(run_name.encode(), digest_size=3).hexdigest()}"


def task_id(run_name: str, index: int, round_: int = 0) -> str:
    """<run>-<index>, and <run>-<index>-r<n> for the n-th time a task is added again."""
    return f"{run_name}-{index}" + (f"-r{round_}" if round_ else "")


def task_index(task_id_: str) -> tuple:
    """(index, round) of a task id made by task_id()."""
    last = task_id_.rsplit("-", 1)[1]
    if last.startswith("r"):
        return int(task_id_.rsplit("-", 2)[1]), int(last[1:])
    return int(last), 0


def content_fingerprint(names: list) -> str:
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for name, _, content in names:
        digest.update(f"{name}={content};".encode())
    return digest.hexdigest()
