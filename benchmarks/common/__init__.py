"""What every benchmark shares: where it ran (machine, commit), CPU sampling
and waiting for a quiet machine, what a process holds (memory, file
handles), a worker's ``/metrics``, progress lines, and its result (the JSON
file and the ``overall: PASS|FAIL`` verdict line)."""

from benchmarks.common.cpu import (
    CpuRecorder,
    CpuSample,
    CpuSpan,
    cpu_between,
    machine_busy_seconds,
    proc_cpu_seconds,
    this_process,
    wait_for_quiet,
)
from benchmarks.common.machine import (
    ROOT,
    git_commit,
    machine_info,
    package_version,
    short_commit,
)
from benchmarks.common.procfs import open_fds, rss_mb
from benchmarks.common.progress import progress_logger
from benchmarks.common.results import (
    RESULTS_DIR,
    dump_json,
    report,
    result_path,
    run_header,
    utc_now,
    verdict_line,
    write_result,
)
from benchmarks.common.signals import stop_on_termination_signals
from benchmarks.common.worker_metrics import scrape

__all__ = [
    "RESULTS_DIR",
    "ROOT",
    "CpuRecorder",
    "CpuSample",
    "CpuSpan",
    "cpu_between",
    "dump_json",
    "git_commit",
    "machine_busy_seconds",
    "machine_info",
    "open_fds",
    "package_version",
    "proc_cpu_seconds",
    "progress_logger",
    "report",
    "result_path",
    "rss_mb",
    "run_header",
    "scrape",
    "short_commit",
    "stop_on_termination_signals",
    "this_process",
    "utc_now",
    "verdict_line",
    "wait_for_quiet",
    "write_result",
]
