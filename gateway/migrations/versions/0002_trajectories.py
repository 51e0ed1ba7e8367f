"""Trajectories and their steps.

Revision ID: 0002_trajectories
Revises: 0001_api_keys
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_trajectories"
down_revision = "0001_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trajectories",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("collection", sa.String(200), nullable=True),
        sa.Column("model", sa.String(300), nullable=True),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("routine_id", sa.String(40), nullable=True),
        sa.Column("replay_of", sa.String(40), nullable=True),
        sa.Column("idempotency_scope", sa.String(300), nullable=True, unique=True),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("redactions", sa.JSON(), nullable=False),
        sa.Column("upstream", sa.JSON(), nullable=True),
        sa.Column("runbook", sa.JSON(), nullable=True),
        sa.Column("files", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_token_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    for column in ("status", "collection", "model", "key_id", "created_at", "routine_id"):
        op.create_index(f"ix_trajectories_{column}", "trajectories", [column])
    op.create_table(
        "trajectory_steps",
        sa.Column("trajectory_id", sa.String(40), sa.ForeignKey("trajectories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("type", sa.String(24), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trajectory_steps")
    op.drop_table("trajectories")
