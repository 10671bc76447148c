"""What workflows and activities exchange: inputs, results, state and query models per
workflow, the step registry, names (IDs, task queues, signals, search attributes) and
the metrics workflows record. Imports ``freightline.kargo`` and the foundation."""
