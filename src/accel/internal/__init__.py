"""The internal API that drivers, agents and conductors speak to one another."""
