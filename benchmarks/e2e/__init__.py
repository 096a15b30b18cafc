"""End-to-end benchmark of the decision hot path on the embedded broker.

One command, one run::

    scripts/bench                 # N=100,000; 1,000 / 5,000 / 20,000 req/s for 10 s each
    scripts/bench --quick         # N=20,000; 5 s per rate
    scripts/bench --json          # JSON on stdout (the table goes to stderr)

For each processor configuration

* ``echo``   — ``benchmarks/echo_worker.py``: bare aiokafka consume → orjson
  loads/dumps → produce, with select_arm's consumer/producer settings (the
  Python limit of the pipe);
* ``decide`` — ``python -m app.cli worker --roles decide`` (Faust worker,
  select_arm only);
* ``all``    — ``python -m app.cli worker --roles decide,join,learn`` (the
  join agent also consumes every decision),

it measures, each on a fresh embedded broker with ``topics.yaml`` applied:

1. **saturation throughput**: N simulator requests are written to the requests
   topic *before* the processor starts; the drain rate is
   ``N / (last output received − first output produced)``, seen by a
   measuring consumer that reads the output topic from offset 0 and counts
   distinct request ids (the output key); exactly the N ids written must come
   out. Best of ``--repeat`` runs, interleaving the configurations;
2. **latency at offered rates**: per rate, a fresh broker and processor, ready
   (``/health`` 200, or the echo's ready file) and warmed up; a driver
   *process* sends requests at the rate for D seconds in bursts every 2 ms
   (catching up on any lag), logging each request id's send time
   (``time.time_ns()``, also the request's ``created_at``); the measuring
   consumer in this process logs each id's receive time. Reported: achieved
   send rate, received rate, p50/p95/p99/max request → output latency and ids
   lost (not out within a grace period);
3. **POST /decide** (``http_decide``; ``--only http`` runs only this): the
   decide worker's HTTP endpoint, open loop at 1,000 and 5,000 requests/s
   (latency from each request's scheduled send time), without and with
   ``?ack=1``, and its closed-loop saturation throughput.

CPU time of the processor, the broker, this process and the rest of the
machine is sampled from ``/proc`` over each measurement: the machine may be
small (2 cores for broker + processor + driver + meter) and shared.

Results: a table on stdout (stderr with ``--json``) and JSON in
``benchmarks/results/e2e-<git short sha>[-quick].json``. Targets: pipeline
drain ≥ 0.5 × echo drain; p99 ≤ 10 ms at 1,000 requests/s; metrics publishing
costs < 5% of the all-roles drain; POST /decide p99 ≤ 10 ms at 1,000/s. The
last line is ``overall: PASS|FAIL``.

Modules: ``cli`` (options, the run), ``configs`` (the processors under test),
``processor``, ``broker``, ``payloads``, ``meter``, ``throughput``,
``latency``, ``driver`` (the paced producer process), ``http_decide`` (POST
/decide and its load generator), ``join_progress``, ``publishing``,
``profiling``, ``stats``, ``targets``, ``report``.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import machine_info as _machine_info
from benchmarks.common import progress_logger

# The streaming stack whose versions every e2e result records.
PACKAGES = ("aiokafka", "faust", "orjson", "numpy")

log = progress_logger("bench")


class BenchError(RuntimeError):
    """A measurement could not be completed (processor died, ids missing...)."""


def machine_info() -> dict[str, Any]:
    """The machine, with the versions of the streaming stack (benchmarks/chaos.py
    records the same)."""
    return _machine_info(*PACKAGES)
