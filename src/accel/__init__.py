"""accel: accelerator management for fleets of servers.

Data flows driver -> agent -> conductor -> database -> api. Each of those is a
sub-package here; the pieces they share (the internal API's wire schemas and
client, the database, configuration, errors) sit beside them.
"""

__version__ = "0.1.0"
