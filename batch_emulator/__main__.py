"""python -m batch_emulator --host 127.0.0.1 --port 8770 --account NAME --key KEY ..."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import uvicorn

from .server import DEFAULT_ACCOUNT, DEFAULT_DELETE_DELAY, build, new_key, stop_backend


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m batch_emulator",
                                description="Azure Batch (REST API 2025-06-01) on this machine.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8770)
    p.add_argument("--account", default=DEFAULT_ACCOUNT, help="the Batch account name clients sign with")
    p.add_argument("--key", default=None,
                   help="base64 account key (default: $BATCH_EMULATOR_KEY, else a new random key, printed)")
    p.add_argument("--docker", choices=("auto", "on", "off"), default="auto",
                   help="run tasks with containerSettings in Docker: auto (if an engine answers), on, off")
    p.add_argument("--faults", default=None, metavar="SPEC",
                   help="e.g. transient=0.1,throttle=0.05,preempt=0.3,seed=7")
    p.add_argument("--node-startup-delay", type=float, default=0.05, metavar="S")
    p.add_argument("--preempt-recovery", type=float, default=None, metavar="S",
                   help="how long a preempted node stays away (default: max(0.2, start-up delay))")
    p.add_argument("--quota", default=None, metavar="SPEC",
                   help="account quotas, any subset of dedicated-cores=N,spot-cores=N,pools=N,active-jobs=N")
    p.add_argument("--allocation", choices=("ok", "fail", "timeout"), default="ok",
                   help="node allocation: ok, fail (AllocationFailed), timeout (AllocationTimedout after resizeTimeout)")
    p.add_argument("--delete-delay", type=float, default=DEFAULT_DELETE_DELAY, metavar="S",
                   help="seconds a deleted pool or job stays 'deleting' and a terminated job 'terminating'")
    p.add_argument("--counts-lag", type=float, default=0.0, metavar="S",
                   help="task counts come from a snapshot up to S seconds old")
    p.add_argument("--state-file", default=None, metavar="PATH",
                   help="keep the account's pools, jobs and tasks in this JSON file across restarts")
    p.add_argument("--autoscale-interval", type=float, default=None, metavar="S",
                   help="real seconds a 5-minute autoscale interval lasts (all autoscale times scale with it; "
                        "default: real time)")
    p.add_argument("--task-overhead", type=float, default=0.0, metavar="S",
                   help="seconds added to each task run on the host: a model of the service's fixed cost "
                        "per task (scheduling, container start), not a measurement")
    p.add_argument("--workdir", default=None, help="where nodes keep task directories (default: a temp dir)")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)

    given = args.key or os.environ.get("BATCH_EMULATOR_KEY")   # the environment keeps it out of `ps`
    key = given or new_key()
    try:
        app, backend = build(args.account, key, docker=args.docker, faults=args.faults,
                             node_startup_delay=args.node_startup_delay, workdir=args.workdir,
                             preempt_recovery=args.preempt_recovery, quota=args.quota,
                             allocation=args.allocation, delete_delay=args.delete_delay,
                             counts_lag=args.counts_lag, state_file=args.state_file,
                             autoscale_interval=args.autoscale_interval, task_overhead=args.task_overhead)
    except (ValueError, RuntimeError) as e:
        print(f"batch_emulator: {e}", file=sys.stderr)
        return 2
    backend.base_url = f"http://{args.host}:{args.port}"
    logging.basicConfig(level=args.log_level.upper())
    print(f"Batch emulator on {backend.base_url}  account={args.account}"
          + ("" if given else f"  key={key}")
          + f"  docker={'yes' if backend.runner.docker else 'no'}  workdir={backend.workdir}", flush=True)
    # uvicorn stops on SIGTERM, then raises the signal again with the handler
    # it found: with this one that is an exception, so the `finally` below still
    # ends the task runs and containers (the default handler would end the
    # process at once and leave them running).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    _watch_parent(backend)
    server = _Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                    access_log=False, lifespan="off"))
    server.backend = backend
    try:
        server.run()
    except KeyboardInterrupt:   # Ctrl-C, raised again once the server stopped
        pass
    finally:
        stop_backend(backend)
    return 0 if server.started else 3   # 3: uvicorn's exit code for a server that could not start


class _Server(uvicorn.Server):
    def handle_exit(self, sig, frame):
        # Stop the runs at the signal, not after the HTTP server's graceful
        # shutdown: a run that ends meanwhile must not be recorded as ended.
        self.backend.stop_runs()
        super().handle_exit(sig, frame)


def _watch_parent(backend) -> None:
    """A parent that tied the emulator's life to its own (PR_SET_PDEATHSIG, as
    the kit's --emulate does) may take other processes with it, such as the
    storage the tasks use. The kernel gives the emulator its new parent before
    it sends any of them their signal, so from the moment the parent is gone
    nothing more is recorded, even before the emulator's own signal is handled."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    sig = ctypes.c_int(0)
    if ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(sig)) != 0 or not sig.value:  # PR_GET_PDEATHSIG
        return
    parent = os.getppid()
    backend.parent_gone = lambda: os.getppid() != parent


def _exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
