"""The fleet simulator: many nodes' agents and drivers in one process (``accel sim``)."""
