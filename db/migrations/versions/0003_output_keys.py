"""Outputs record a storage key relative to the store (`outputs/<job>/<run>/...`), not a
host's absolute path, so any machine that reaches the store reads them.

Rows written before held `<ATELIER_HOME>/outputs/<job>/...`: the key is what follows the
home, found by the job's own folder whatever the home's path was.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

outputs = sa.table(
    "outputs", sa.column("id", sa.Integer), sa.column("job_id", sa.String),
    sa.column("key", sa.Text),
)  # fmt: skip


def key_of(path: str, job_id: str) -> str:
    folder = f"outputs/{job_id}/"
    at = path.rfind("/" + folder)
    if at >= 0:
        return path[at + 1 :]
    return path if path.startswith(folder) else path.lstrip("/")


def upgrade() -> None:
    with op.batch_alter_table("outputs") as table:
        table.alter_column("path", new_column_name="key", existing_type=sa.Text)
    connection = op.get_bind()
    rows = connection.execute(sa.select(outputs.c.id, outputs.c.job_id, outputs.c.key)).all()
    for row_id, job_id, path in rows:
        key = key_of(path, job_id)
        if key != path:
            connection.execute(outputs.update().where(outputs.c.id == row_id).values(key=key))


def downgrade() -> None:
    with op.batch_alter_table("outputs") as table:
        table.alter_column("key", new_column_name="path", existing_type=sa.Text)
