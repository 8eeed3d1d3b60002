"""Persistent state: SQLAlchemy models, the engine, migrations and job state transitions."""
