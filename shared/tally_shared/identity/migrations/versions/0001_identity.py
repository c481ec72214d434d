"""identity: projects, api keys, users, memberships

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
S = "identity"


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S,
    )
    op.create_table(
        "api_keys",
        sa.Column("public_key", sa.String(100), primary_key=True),
        sa.Column("project_id", sa.String(64), sa.ForeignKey(f"{S}.projects.id"), nullable=False, index=True),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("note", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        schema=S,
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.String(200)),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default="true"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S,
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.String(64), sa.ForeignKey(f"{S}.users.id"), primary_key=True),
        sa.Column("project_id", sa.String(64), sa.ForeignKey(f"{S}.projects.id"), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        schema=S,
    )


def downgrade() -> None:
    for t in ("memberships", "users", "api_keys", "projects"):
        op.drop_table(t, schema=S)
