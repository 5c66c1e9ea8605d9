"""The floor of bench/run_latency.py: a flow that does nothing, deployed to the same pool."""

from prefect import flow


@flow(persist_result=False)
def noop() -> int:
    return 1
