"""hyperparameter tuning jobs

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tuning_jobs",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("objective_metric", sa.String(255), nullable=False),
        sa.Column("objective_type", sa.String(16), nullable=False),
        sa.Column("max_jobs", sa.Integer(), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("study_name", sa.String(64), nullable=False),
        sa.Column("launched", sa.Integer(), nullable=False),
        sa.Column("finished", sa.Integer(), nullable=False),
        sa.Column("stop_requested", sa.Boolean(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("driver", sa.String(255), nullable=True),
        sa.Column("driver_heartbeat", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_tuning_jobs_status", "tuning_jobs", ["status"])
    op.create_table(
        "tuning_trials",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "tuning_job_name",
            sa.String(32),
            sa.ForeignKey("tuning_jobs.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("optuna_number", sa.Integer(), nullable=True),
        sa.Column("optuna_trial_id", sa.Integer(), nullable=True),
        sa.Column("training_job_name", sa.String(63), nullable=True, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pruned", sa.Boolean(), nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("objective_value", sa.Float(), nullable=True),
        sa.Column("objective_status", sa.String(16), nullable=False),
        sa.Column("intermediate_steps", sa.Integer(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("tuning_job_name", "slot"),
    )
    op.create_index("ix_tuning_trials_tuning_job_name", "tuning_trials", ["tuning_job_name"])


def downgrade() -> None:
    op.drop_index("ix_tuning_trials_tuning_job_name", table_name="tuning_trials")
    op.drop_table("tuning_trials")
    op.drop_index("ix_tuning_jobs_status", table_name="tuning_jobs")
    op.drop_table("tuning_jobs")
