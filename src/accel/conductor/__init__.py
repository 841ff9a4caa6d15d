"""The conductor: wrangles every agent and keeps the database true."""
