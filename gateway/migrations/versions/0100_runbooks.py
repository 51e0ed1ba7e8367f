"""Runbooks: collections, uploaded files, run grades, run files and run leases.

Revision ID: 0100_runbooks
Revises: 0001_api_keys
"""

import sqlalchemy as sa
from alembic import op

revision = "0100_runbooks"
down_revision = "0001_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runbook_collections",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("description", sa.String(1000), nullable=False, server_default=""),
        sa.Column("secrets_ciphertext", sa.Text(), nullable=True),
        sa.Column("secret_names", sa.JSON(), nullable=False),
        sa.Column("defaults", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "uploaded_files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_uploaded_files_key_id", "uploaded_files", ["key_id"])
    op.create_table(
        "uploaded_file_contents",
        sa.Column(
            "file_id",
            sa.String(40),
            sa.ForeignKey("uploaded_files.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("content", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "run_grades",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("trajectory_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("grader", sa.String(200), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_run_grades_trajectory_id", "run_grades", ["trajectory_id"])
    op.create_table(
        "run_files",
        sa.Column("trajectory_id", sa.String(40), primary_key=True),
        sa.Column("path", sa.String(500), primary_key=True),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "run_leases",
        sa.Column("trajectory_id", sa.String(40), primary_key=True),
        sa.Column("instance", sa.String(40), nullable=False),
        sa.Column("sandbox_id", sa.String(100), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_run_leases_instance", "run_leases", ["instance"])


def downgrade() -> None:
    op.drop_index("ix_run_leases_instance", table_name="run_leases")
    op.drop_table("run_leases")
    op.drop_table("run_files")
    op.drop_index("ix_run_grades_trajectory_id", table_name="run_grades")
    op.drop_table("run_grades")
    op.drop_table("uploaded_file_contents")
    op.drop_index("ix_uploaded_files_key_id", table_name="uploaded_files")
    op.drop_table("uploaded_files")
    op.drop_table("runbook_collections")
