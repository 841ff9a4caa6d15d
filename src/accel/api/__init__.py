"""The public REST API: Cyborg's v2, answered from the database, plus accel's own."""
