"""accel and OpenStack: credentials, Placement and Nova clients."""
