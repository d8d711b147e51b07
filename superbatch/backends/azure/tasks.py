"""What one Batch task is: the worker's command line in the image, its
inputs as resource files, its output as an output file; what a chunk task
is; the job preparation task that brings the shared config to each node
once; and how the service says that a task ran over its time."""

from datetime import timedelta
from typing import Optional

from azure.batch import models

from ...formats import FILES, Files
from .settings import AzureSettings

# How a task stopped at maxWallClockTime is reported. The service's table of
# task failure codes (TaskFailureInformationCodes in the Batch .NET library,
# sdk/batch/Microsoft.Azure.Batch/src/Common/BatchErrorCodeStrings.cs in
# Azure/azure-sdk-for-net) has no code of its own for it: the service ends
# the task, and "TaskEnded" ("The task ended.") is its code for a task it
# ended. The kit never ends a task itself (it only ends a job whose tasks
# have all ended), so TaskEnded after at least the time limit is a timeout.
# The Batch emulator names it MaxWallClockTimeExceeded (its own choice,
# batch_emulator/README.md).
ENDED_BY_SERVICE = "TaskEnded"
EMULATOR_TIMEOUT = "MaxWallClockTimeExceeded"


# Batch maps the task's user into the container. The documented way to run as
# root there, so that the worker can write its output whatever user the image
# names, is the pool-scope auto-user with admin elevation ("Run container
# applications on Azure Batch",
# https://learn.microsoft.com/azure/batch/batch-docker-container-workloads;
# https://learn.microsoft.com/azure/batch/batch-user-accounts).
def _admin() -> models.UserIdentity:
    return models.UserIdentity(auto_user=models.AutoUserSpecification(
        scope=models.AutoUserScope.POOL, elevation_level=models.ElevationLevel.ADMIN))


def _in_image(settings: AzureSettings, image: Optional[str]) -> models.BatchTaskContainerSettings:
    return models.BatchTaskContainerSettings(
        image_name=image or settings.image, working_directory=models.ContainerWorkingDirectory.TASK_WORKING_DIRECTORY)


def task_definition(task_id: str, settings: AzureSettings, config_url: Optional[str], resource_url: str,
                    output_url: str, output_blob: str, retries: int, files: Files = FILES["pickle"],
                    image: str = None) -> models.BatchTaskCreateOptions:
    """One iteration as one task. config_url: None when the job's preparation
    task brings the config to the node (config_preparation).
    image: the reference the task runs, by digest where known (default: settings.image)."""
    inputs = [models.ResourceFile(http_url=config_url, file_path=files.config)] if config_url else []
    inputs.append(models.ResourceFile(http_url=resource_url, file_path=files.resource))
    return models.BatchTaskCreateOptions(
        id=task_id,
        command_line=settings.task_command,
        container_settings=_in_image(settings, image),
        user_identity=_admin(),
        resource_files=inputs,
        output_files=[models.OutputFile(
            file_pattern=files.output,
            destination=models.OutputFileDestination(container=models.OutputFileBlobContainerDestination(container_url=output_url, path=output_blob)),
            upload_options=models.OutputFileUploadConfiguration(upload_condition=models.OutputFileUploadCondition.TASK_SUCCESS),
        )],
        constraints=models.BatchTaskConstraints(
            max_task_retry_count=retries,
            # --task-timeout: measured from the task's start, sent as an ISO 8601 duration (PT2S)
            max_wall_clock_time=timedelta(seconds=settings.task_timeout) if settings.task_timeout else None,
        ),
    )


def chunk_task_definition(task_id: str, settings: AzureSettings, resource_url: str, results_url: str,
                          results_prefix: str, retries: int, files: Files = FILES["pickle"],
                          image: str = None, time_box: Optional[float] = None) -> models.BatchTaskCreateOptions:
    """Several iterations as one task (worker.py's docstring): the chunk's
    resource file in, and in its environment the blob folder where the worker
    puts each iteration's file as it is written. No output file: Batch uploads
    those only when the task ends, and a preempted node would lose them.
    retries: for each iteration inside the worker, and for the chunk as a whole.
    time_box: seconds after which the worker starts no more iterations (--chunk auto's first wave)."""
    return models.BatchTaskCreateOptions(
        id=task_id,
        command_line=settings.task_command,
        container_settings=_in_image(settings, image),
        user_identity=_admin(),
        resource_files=[models.ResourceFile(http_url=resource_url, file_path=files.resource)],
        environment_settings=[
            models.EnvironmentSetting(name="SUPERBATCH_RESULTS_URL", value=results_url),
            models.EnvironmentSetting(name="SUPERBATCH_RESULTS_PREFIX", value=results_prefix),
            models.EnvironmentSetting(name="SUPERBATCH_RETRIES", value=str(retries)),
            *([models.EnvironmentSetting(name="SUPERBATCH_TIME_BOX", value=f"{time_box:g}")] if time_box else []),
        ],
        constraints=models.BatchTaskConstraints(max_task_retry_count=retries),
    )


def config_preparation(config_url: str, files: Files) -> models.BatchJobPreparationTask:
    """The job's preparation task: it runs once on each node before the job's
    first task there, and its resource file, the shared config, lands in its
    working directory, which every task of the job finds through
    AZ_BATCH_JOB_PREP_WORKING_DIR ("Run job preparation and job release
    tasks", https://learn.microsoft.com/azure/batch/batch-job-prep-release).
    So a config is fetched once per node, not once per task. The command does
    nothing: it runs on the node itself (no container), as the same user as
    the tasks, so that they can read the file."""
    return models.BatchJobPreparationTask(
        command_line="/bin/true",
        resource_files=[models.ResourceFile(http_url=config_url, file_path=files.config)],
        user_identity=_admin(),
        wait_for_success=True,
        rerun_on_node_reboot_after_success=True,
        constraints=models.BatchTaskConstraints(max_task_retry_count=2),
    )


def ran_out_of_time(info: Optional[models.BatchTaskExecutionInfo], timeout: Optional[float]) -> bool:
    """Whether the service stopped this task at its maxWallClockTime."""
    if not timeout or info is None or info.failure_info is None:
        return False
    code = info.failure_info.code
    if code == EMULATOR_TIMEOUT:
        return True
    if code != ENDED_BY_SERVICE or info.start_time is None or info.end_time is None:
        return False
    return (info.end_time - info.start_time).total_seconds() >= timeout * 0.99
