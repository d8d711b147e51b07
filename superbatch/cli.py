"""The command line of controller.py."""

import argparse
import logging
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from .backends import BACKENDS, backend_class
from .chunks import chunk_setting
from .errors import SuperbatchError, UsageError
from .flow import TaskFailures, run_job
from .formats import FORMATS
from .redact import redact
from .runs import check_run_name, default_run_name

DEFAULT_IMAGE = "superbatch-worker:latest"
KIT_DIR = Path(__file__).resolve().parent.parent  # the folder holding controller.py and task.py


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # One line, like every other error of the kit, instead of usage + error.
        raise UsageError(f"{message} (see --help)")


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def duration(text: str) -> float:
    """90s, 15m, 2h, or a bare number of seconds -> seconds."""
    cleaned = text.strip().lower()
    number, scale = (cleaned[:-1], DURATION_UNITS[cleaned[-1]]) if cleaned[-1:] in DURATION_UNITS else (cleaned, 1)
    try:
        value = float(number) * scale
    except ValueError:
        value = None
    if value is None or not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive duration such as 90s, 15m or 2h (a bare number is seconds), not {text!r}")
    return value


def run_name(text: str) -> str:
    try:
        return check_run_name(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--run {text!r}: ")) from None


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="controller.py",
        description="Run every task that task.py defines and print the aggregate of their results.",
        epilog="The same --run again resumes a run: only the tasks without an output run again.",
    )
    parser.add_argument("--backend", choices=list(BACKENDS), default="local", help="where the tasks run (default: local, worker processes on this machine)")
    parser.add_argument("--run", type=run_name, metavar="NAME", help="name of the run, its folder is runs/NAME/ (default: run-<date>-<time>); the same name again resumes it")
    parser.add_argument("--workers", type=positive_int, metavar="N", default=os.cpu_count(), help="tasks run at once by the local and docker backends (default: the number of CPUs, %(default)s here)")
    parser.add_argument("--retries", type=non_negative_int, metavar="N", default=0, help="times a failed task is tried again (default: 0)")
    parser.add_argument("--chunk", type=chunk_setting, metavar="N|auto", help="iterations per task: a number, or auto (sized from measured durations); "
                        "each iteration keeps its own result, failure and resume (default: auto with worker.py and no --task-timeout, else 1)")
    parser.add_argument("--task-timeout", type=duration, metavar="DURATION", help="stop a task that runs longer than this (90s, 15m, 2h; a bare number is seconds) and report it as timed out (default: no limit)")
    parser.add_argument("--allow-failures", action="store_true", help="aggregate the results of the tasks that succeeded instead of failing the run")
    parser.add_argument("--restage", action="store_true", help="accept a task.py whose inputs differ from the run's staged ones: stage them again and rerun the tasks they change")
    parser.add_argument("--max-input-mb", type=positive_float, metavar="MB", default=256.0, help="refuse a task whose pickled (or JSON) parameters are larger than this (default: %(default)g)")
    parser.add_argument("--format", choices=FORMATS, help="the format of each task's files: pickle (Python workers) or json (a worker in any language); "
                        "default: task.py's FORMAT, else pickle; a resumed run keeps its own")
    parser.add_argument("--task-command", metavar="COMMAND", help="the command line each task runs in its working directory, instead of the worker "
                        "(default: task.py's WORKER, else worker.py)")
    parser.add_argument("--summary-json", type=Path, metavar="PATH", help="write a machine-readable summary of the run to PATH")
    parser.add_argument("--report", action="store_true", help="with --run NAME: write runs/NAME/report.html for that run, without running anything (every run writes it at its end)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")

    image = parser.add_argument_group("worker image (docker and azure backends)")
    image.add_argument("--image", metavar="NAME", default=os.environ.get("DOCKER_IMAGE", DEFAULT_IMAGE), help="the worker image (default: $DOCKER_IMAGE or %(default)s)")
    image.add_argument("--build", action="store_true", help="build the image from the Dockerfile before the run")
    image.add_argument("--base-image", metavar="IMAGE", help="with --build: the Dockerfile's BASE_IMAGE build argument (default: the Dockerfile's own)")
    image.add_argument("--preflight", action="store_true", help="run task 0 in the image (docker) before the run; --build does so when the image goes to the cloud")
    image.add_argument("--push", action="store_true", help="push the image to $REGISTRY_SERVER before the run, logging in with $REGISTRY_USERNAME and $REGISTRY_PASSWORD")

    for name in BACKENDS:
        try:
            backend = backend_class(name)
        except UsageError:
            continue  # not in this version yet
        backend.add_arguments(parser.add_argument_group(f"{name} backend"))
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    # The Azure SDKs log expected answers (a 404 meaning "no such pool") as
    # warnings with tracebacks; the kit reports what matters itself.
    logging.getLogger("azure").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    try:
        options = build_parser().parse_args(argv)
        if options.report:
            return _report_only(options)
        options.run = options.run or default_run_name()
        options.argv = argv  # for the resume and cancel commands printed on Ctrl-C
        if not options.quiet:
            print(f"[superbatch] run {options.run} on the {options.backend} backend (resume it with --run {options.run})", file=sys.stderr)
        with _account(options):
            summary = run_job(options, KIT_DIR, KIT_DIR / "runs")
        if summary is None:  # --cancel
            print(f"[superbatch] run {options.run} cancelled", file=sys.stderr)
            return 0
    except KeyboardInterrupt:
        print(f"\ninterrupted; rerun with --run {options.run} to resume", file=sys.stderr)
        return 130
    except TaskFailures as failures:
        if options.summary_json:
            failures.summary.write(options.summary_json)
        return _fail(failures, debug)
    except SuperbatchError as error:
        return _fail(error, debug)
    except Exception as error:  # unforeseen: the traceback helps, but may quote a service's answer and its secrets
        print(redact("".join(traceback.format_exception(error))), file=sys.stderr, end="")
        return 1
    if options.summary_json:
        summary.write(options.summary_json)
    if summary.failures:
        print(f"warning: {len(summary.failures)} tasks failed ({', '.join(str(f.index) for f in summary.failures[:10])}); aggregated the other {summary.tasks['total'] - len(summary.failures)}", file=sys.stderr)
    print(summary.aggregate)
    return 0


def _report_only(options) -> int:
    """--report: the report of an existing run, from its facts."""
    if not options.run:
        raise UsageError("--report writes the report of an existing run: add --run NAME")
    run_dir = KIT_DIR / "runs" / options.run
    if not run_dir.is_dir():
        raise UsageError(f"--report: there is no run {options.run!r} (no folder runs/{options.run}/)")
    from .report import write_report

    print(write_report(run_dir))
    return 0


@contextmanager
def _account(options):
    """The emulated account under --emulate (superbatch/emulate.py), for the length of the run."""
    if getattr(options, "emulate", None) is None:
        yield
        return
    if options.backend != "azure":
        raise UsageError("--emulate rehearses the azure backend: add --backend azure")
    from .emulate import emulated_account

    with emulated_account(KIT_DIR / "runs" / options.run, options, KIT_DIR) as environ:
        options.environ = environ
        yield


def _fail(error: SuperbatchError, debug: bool) -> int:
    if debug:
        print(redact("".join(traceback.format_exception(error))), file=sys.stderr, end="")
    print(f"error: {redact(str(error))}", file=sys.stderr)
    return error.exit_code
