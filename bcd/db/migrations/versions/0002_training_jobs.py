"""training jobs, job metrics, job events

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("algorithm", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("tuning_job_name", sa.String(63), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("secondary_status", sa.String(32), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("workdir", sa.Text(), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("supervisor_pid", sa.Integer(), nullable=True),
        sa.Column("supervisor_start", sa.Float(), nullable=True),
        sa.Column("model_artifact", sa.Text(), nullable=True),
        sa.Column("checkpoint_uri", sa.Text(), nullable=True),
        sa.Column("final_metrics", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("training_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("training_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=False),
        sa.Column("billable_seconds", sa.Integer(), nullable=True),
    )
    op.create_index("ix_training_jobs_tuning_job_name", "training_jobs", ["tuning_job_name"])
    op.create_index("ix_training_jobs_status", "training_jobs", ["status"])
    op.create_index("ix_training_jobs_created_at", "training_jobs", ["created_at"])

    op.create_table(
        "training_job_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_name",
            sa.String(63),
            sa.ForeignKey("training_jobs.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_training_job_events_job_name", "training_job_events", ["job_name"])

    op.create_table(
        "training_job_metrics",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_name",
            sa.String(63),
            sa.ForeignKey("training_jobs.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("metric_name", sa.String(255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_training_job_metrics_series",
        "training_job_metrics",
        ["job_name", "metric_name", "step"],
    )


def downgrade() -> None:
    op.drop_index("ix_training_job_metrics_series", table_name="training_job_metrics")
    op.drop_table("training_job_metrics")
    op.drop_index("ix_training_job_events_job_name", table_name="training_job_events")
    op.drop_table("training_job_events")
    op.drop_index("ix_training_jobs_created_at", table_name="training_jobs")
    op.drop_index("ix_training_jobs_status", table_name="training_jobs")
    op.drop_index("ix_training_jobs_tuning_job_name", table_name="training_jobs")
    op.drop_table("training_jobs")
