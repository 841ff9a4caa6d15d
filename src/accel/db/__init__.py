"""The database the conductor keeps true and the api reads: models, engine, migrations."""
