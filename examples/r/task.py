"""The job, with its tasks written in R (task.R): copy this folder's files over
the kit's top level and run `python controller.py`.

The controller stays Python: global_config(), parameters() and aggregate()
live here as in any task.py. Each task runs worker.R (WORKER below), which
reads the task's two JSON files, calls task() from task.R and writes its
result as JSON (FORMAT below; README: "Workers in other languages").

The example: the longest Collatz chain. Each task follows the chains of one
block of starting numbers and returns the longest one it saw, with the mean
length; the aggregate keeps the longest of all.
"""

WORKER = ["Rscript", "worker.R"]  # run in each task's working directory; worker.R is found beside this file (in the image, in /app)
FORMAT = "json"  # the files worker.R reads and writes


def global_config():
    """Shared by every task (a JSON object: R receives a named list)."""
    return {"block_size": 2000}


def parameters():
    """One item per task: the first starting number of each block."""
    return [{"first": 1 + block * 2000} for block in range(8)]


def aggregate(results):
    """Receives the results in task order (the JSON that task() returned, as Python values)."""
    longest = max(results, key=lambda result: result["steps"])  # the first block wins a tie
    return {
        "start": longest["start"],
        "steps": longest["steps"],
        "mean_steps": sum(result["mean_steps"] for result in results) / len(results),
    }
