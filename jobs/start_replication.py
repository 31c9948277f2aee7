"""The job of the original After README: ``{"name": "start_replication",
"arguments": [2, 3, "test"]}``. A harmless demo: it only reports what it would replicate."""


def start_replication(task, source, target, label=None):
    """Demo: returns {"source", "target", "label"} without replicating anything."""
    return {"source": source, "target": target, "label": label}
