"""Running ctrain's DAGs under a real Airflow as its users do: a stream of batches (``stream``)
and live traffic for ``ctrain serve`` (``callers``), on ``ctrain.runtime``'s services, waits and
ports. The demo, the end-to-end tests and the benchmarks use these; nothing here is a step of
the loop.
"""
