"""The file-name contract between the controller and the worker.

Both sides import these names; nothing else belongs here.
"""

# In every task's working directory:
GLOBAL_CONFIG_FILE = "config.pickle"  # the object every task shares
TASK_RESOURCE_FILE = "resource.pickle"  # this task's parameters
TASK_OUTPUT_FILE = "output.pickle"  # this task's result, written by the worker

# The same files on the controller's side (runs/<run>/) and in blob storage,
# where the task index tells them apart:
LOCAL_RESOURCE_PATTERN = "task_{}_resource.pickle"
LOCAL_OUTPUT_PATTERN = "task_{}_output.pickle"

# With --format json the same five files are UTF-8 JSON instead, so that a
# worker in any language can read and write them (README: "The file contract").
GLOBAL_CONFIG_JSON_FILE = "config.json"
TASK_RESOURCE_JSON_FILE = "resource.json"
TASK_OUTPUT_JSON_FILE = "output.json"
LOCAL_RESOURCE_JSON_PATTERN = "task_{}_resource.json"
LOCAL_OUTPUT_JSON_PATTERN = "task_{}_output.json"

# A chunk (--chunk): one working directory runs several iterations. Its
# resource file holds {"superbatch_chunk": [[index, parameters], ...]}; the
# worker writes each iteration's result under LOCAL_OUTPUT_PATTERN (or the
# JSON one) as it finishes, and each failure's traceback under this name.
CHUNK_KEY = "superbatch_chunk"
CHUNK_ERROR_PATTERN = "task_{}_error.txt"
# On Azure Batch a chunk's files go to its own blob folder as they are
# written, and this one last: each iteration's outcome and times, as JSON.
CHUNK_STATUS_FILE = "status.json"
