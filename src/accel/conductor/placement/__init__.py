"""Placement reporting: the conductor keeps each node's accelerators in OpenStack
Placement as Cyborg's tree (``tree``), over keystoneauth (``client``), reconciled
per node (``reconcile``) with its state in the database (``state``), by one loop
(``loop``). What accel offers at all is ``offer``'s one rule."""
