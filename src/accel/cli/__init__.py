"""The ``accel`` command line: the daemons, ``accel up``, and the operators' commands."""
