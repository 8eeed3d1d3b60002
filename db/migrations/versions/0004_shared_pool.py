"""What scheduling a shared pool needs of a job: its owner (fair share), whether it may
be preempted, its time limit and the running time its ended attempts used, when its
current attempt started, the sweep it belongs to, the job it continues, and the URLs to
notify when it ends (with when that was done).

Revision ID: 0004
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.Column("owner", sa.String(length=255), nullable=False, server_default=""),
    sa.Column("preemptible", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("time_limit_seconds", sa.Float(), nullable=True),
    sa.Column("run_seconds", sa.Float(), nullable=False, server_default="0"),
    sa.Column("attempt_started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("sweep_id", sa.String(length=32), nullable=True),
    sa.Column("continues", sa.String(length=32), nullable=True),
    sa.Column("notify", sa.JSON(), nullable=True),
    sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
)

NOTICE_DUE = sa.text("notify IS NOT NULL AND notified_at IS NULL")
"""The few jobs the notifier looks for each second: a partial index holds only them."""


def upgrade() -> None:
    # Plain ADD COLUMNs, no batch copy: on SQLite a batch rebuilds `jobs`, and dropping
    # the old table cascades to every output and event. So SQLite goes without the
    # foreign key of `continues` (the client checks the job exists).
    for column in COLUMNS:
        op.add_column("jobs", column)
    if op.get_bind().dialect.name != "sqlite":
        op.create_foreign_key("fk_jobs_continues", "jobs", "jobs", ["continues"], ["id"])
    op.create_index("ix_jobs_sweep_id", "jobs", ["sweep_id"])
    op.create_index("ix_jobs_owner_status", "jobs", ["owner", "status"])
    op.create_index(
        "ix_jobs_notice_due", "jobs", ["finished_at"],
        postgresql_where=NOTICE_DUE, sqlite_where=NOTICE_DUE,
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_jobs_notice_due", "jobs")
    op.drop_index("ix_jobs_owner_status", "jobs")
    op.drop_index("ix_jobs_sweep_id", "jobs")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_jobs_continues", "jobs", type_="foreignkey")
    for column in reversed(COLUMNS):  # SQLite 3.35+ drops a column in place, too
        op.execute(f"ALTER TABLE jobs DROP COLUMN {column.name}")
