"""The agent: one per node; keeps the node's drivers and speaks for them to conductors."""
