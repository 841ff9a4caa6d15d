"""Default timings of the loops between components, one name per meaning.

The components' settings and the command line options of every daemon that runs
them (``accel driver``, ``agent``, ``conductor``, ``up``, ``sim``) take their defaults
from here, so that a changed default reaches all of them. Only the defaults are
here; what a value means in use is said where it is used.
"""

from __future__ import annotations

# How often an agent says hello to its conductors (its heartbeat); the conductor
# is told the same figure, and judges an agent's silence by it.
HEARTBEAT_INTERVAL = 10.0
# How often a driver says hello to its agent (its registration's heartbeat).
HELLO_INTERVAL = 10.0
# How long an agent waits for a driver's answer (a discovery, a setup call).
DRIVER_TIMEOUT = 10.0
# Heartbeats an agent may miss before its conductor marks it DOWN.
DOWN_AFTER_HEARTBEATS = 3
AGENT_DOWN_AFTER = DOWN_AFTER_HEARTBEATS * HEARTBEAT_INTERVAL
# How often a conductor reads every agent's hardware anew, even when heartbeats say
# nothing changed (a heartbeat's ETag confirms it in between).
RESYNC_INTERVAL = 60.0
# How soon a failed or partial sync (a driver failed) is tried again.
SYNC_RETRY_AFTER = 5.0
# The conductor's fleet health brake: more than this share of the fleet's devices
# turning failed within this many seconds looks like a bad rollout, not dying hardware.
HEALTH_BRAKE_SHARE = 0.1
HEALTH_BRAKE_WINDOW = 600.0
