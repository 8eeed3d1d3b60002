"""Alembic environment: runs migrations on the URL set by db.migrate."""

from alembic import context

from db.engine import make_engine
from db.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
if url is None:
    raise RuntimeError("no sqlalchemy.url in the Alembic config: run migrations via db.migrate")
engine = make_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
