"""models, endpoint configs, endpoints, API keys

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("artifact_url", sa.Text(), nullable=False),
        sa.Column("source_type", sa.String(32), nullable=False),
        sa.Column("source_name", sa.String(63), nullable=True),
        sa.Column("model_json", sa.JSON(), nullable=False),
        sa.Column("onnx_sha256", sa.String(64), nullable=False),
        sa.Column("onnx_bytes", sa.BigInteger(), nullable=False),
        _when("created_at"),
    )
    op.create_table(
        "endpoint_configs",
        sa.Column("name", sa.String(63), primary_key=True),
        _when("created_at"),
    )
    op.create_table(
        "production_variants",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "config_name",
            sa.String(63),
            sa.ForeignKey("endpoint_configs.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("variant_name", sa.String(63), nullable=False),
        sa.Column("model_name", sa.String(63), sa.ForeignKey("models.name"), nullable=False),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.UniqueConstraint("config_name", "variant_name"),
    )
    op.create_index("ix_production_variants_config_name", "production_variants", ["config_name"])
    op.create_index("ix_production_variants_model_name", "production_variants", ["model_name"])
    op.create_table(
        "endpoints",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column(
            "config_name", sa.String(63), sa.ForeignKey("endpoint_configs.name"), nullable=False
        ),
        sa.Column(
            "pending_config_name",
            sa.String(63),
            sa.ForeignKey("endpoint_configs.name"),
            nullable=True,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("operation_owner", sa.String(255), nullable=True),
        _when("created_at"),
        _when("updated_at"),
    )
    op.create_index("ix_endpoints_config_name", "endpoints", ["config_name"])
    op.create_table(
        "endpoint_variant_stats",
        sa.Column(
            "endpoint_name",
            sa.String(63),
            sa.ForeignKey("endpoints.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("variant_name", sa.String(63), primary_key=True),
        sa.Column("invocations", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms_total", sa.Float(), nullable=False),
        _when("updated_at"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("algorithm", sa.String(64), nullable=False),
        sa.Column("salt_hex", sa.String(64), nullable=False),
        sa.Column("hash_hex", sa.String(128), nullable=False),
        _when("created_at"),
        _when("expires_at", nullable=True),
        _when("revoked_at", nullable=True),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("endpoint_variant_stats")
    op.drop_index("ix_endpoints_config_name", table_name="endpoints")
    op.drop_table("endpoints")
    op.drop_index("ix_production_variants_model_name", table_name="production_variants")
    op.drop_index("ix_production_variants_config_name", table_name="production_variants")
    op.drop_table("production_variants")
    op.drop_table("endpoint_configs")
    op.drop_table("models")
