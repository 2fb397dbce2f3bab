"""Operating docpipe: Prometheus metrics, JSON logs with the item's context, Flower's launch,
the live view of a run and its HTML report."""
