"""What one Batch task is: the worker's command line in the image, its two
inputs as resource files, its output as an output file."""

from azure.batch import models

from constants import GLOBAL_CONFIG_FILE, TASK_OUTPUT_FILE, TASK_RESOURCE_FILE

from .settings import AzureSettings


def task_definition(task_id: str, settings: AzureSettings, config_url: str, resource_url: str,
                    output_url: str, output_blob: str, retries: int) -> models.BatchTaskCreateOptions:
    return models.BatchTaskCreateOptions(
        id=task_id,
        command_line=settings.task_command,
        container_settings=models.BatchTaskContainerSettings(
            image_name=settings.image,
            working_directory=models.ContainerWorkingDirectory.TASK_WORKING_DIRECTORY,
            # The image's own user (non-root, for local runs) may not own the
            # task directory that Batch mounts; on a single-tenant Batch VM the
            # container runs as root so that the worker can write its output.
            container_run_options="--user 0:0",
        ),
        resource_files=[
            models.ResourceFile(http_url=config_url, file_path=GLOBAL_CONFIG_FILE),
            models.ResourceFile(http_url=resource_url, file_path=TASK_RESOURCE_FILE),
        ],
        output_files=[models.OutputFile(
            file_pattern=TASK_OUTPUT_FILE,
            destination=models.OutputFileDestination(container=models.OutputFileBlobContainerDestination(container_url=output_url, path=output_blob)),
            upload_options=models.OutputFileUploadConfiguration(upload_condition=models.OutputFileUploadCondition.TASK_SUCCESS),
        )],
        constraints=models.BatchTaskConstraints(max_task_retry_count=retries),
    )
