from sqlalchemy import Boolean, Column, DateTime, ForeignKey, MetaData, String, Table, func

SCHEMA = "identity"
metadata = MetaData(schema=SCHEMA)

projects = Table(
    "projects", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

api_keys = Table(
    "api_keys", metadata,
    Column("public_key", String(100), primary_key=True),
    Column("project_id", String(64), ForeignKey("identity.projects.id"), nullable=False, index=True),
    Column("secret_hash", String(128), nullable=False),
    Column("note", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)

users = Table(
    "users", metadata,
    Column("id", String(64), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200)),
    Column("password_hash", String(300), nullable=False),
    Column("is_active", Boolean, nullable=False, server_default="true"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

memberships = Table(
    "memberships", metadata,
    Column("user_id", String(64), ForeignKey("identity.users.id"), primary_key=True),
    Column("project_id", String(64), ForeignKey("identity.projects.id"), primary_key=True),
    Column("role", String(20), nullable=False),
)
