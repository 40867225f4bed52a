"""data layer: datasets

Revision ID: 0001
Revises: None
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("location", sa.String(2048), nullable=False),
        sa.Column("split_location", sa.String(2048), nullable=True),
        sa.Column("fingerprint", sa.String(80), nullable=False),
        sa.Column("source", sa.String(2048), nullable=False),
        sa.Column("num_patches", sa.Integer(), nullable=False),
        sa.Column("num_patients", sa.Integer(), nullable=False),
        sa.Column("num_padded", sa.Integer(), nullable=False),
        sa.Column("num_rejected", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("splits", sa.JSON(), nullable=False),
        sa.Column("split_config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_datasets_name", "datasets", ["name"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_datasets_name", table_name="datasets")
    op.drop_table("datasets")
