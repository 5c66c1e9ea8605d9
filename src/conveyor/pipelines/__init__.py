"""Source and destination types, and the flow that runs a connector with dlt."""
