"""The stream plumbing: everything that knows Kafka or Faust.

``app.py`` builds the Faust app and registers the agents (``agents/``) from
one table; ``runtime.py`` is what those agents share. Kafka I/O without a
consumer group (``kafka_io.py``, ``partition_ends.py``), the batched
consume → process → produce service (``batched_service.py``), the
``llmopt worker`` process (``worker_process.py``), dead letters, the
embedded broker, the Faust transport corrections, the cluster watch and the
offset bookkeeping of the agents live here too. The pure logic they serve
stays in ``app/`` and never imports this package.
"""
