"""The driver: discovers one kind of hardware on its node and serves it to the agent."""
