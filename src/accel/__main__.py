"""Allows ``python -m accel``, which is how accel up starts its parts."""

from accel.cli.main import main

main()
