"""Table definitions (SQLAlchemy Core), shared by the repositories, the filter compiler and the
Alembic migrations.

Resources are a JSON document (``doc``: the canonical resource without ``id``, ``meta``, group
``members`` and user ``groups``) plus indexed columns for the lookups clients make all the time.
Group membership is its own table so member changes are set-based statements.

Every index costs a page write on every insert (measured: dropping the ``last_modified`` and two
audit indexes took a SQLite create from ~240 to ~60 µs of commit work), so only lookups clients
make on the hot path are indexed. Audit rows are read newest-first by primary key.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JsonDoc = sa.JSON().with_variant(JSONB(), "postgresql")
# Lower-cased names compare in code-point order (as Python does), so on PostgreSQL their
# indexes serve `sw` and ordering too, whatever the database's locale.
LowerText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

users = sa.Table(
    "users",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("user_name", sa.Text, nullable=False),
    # Python's str.lower() of userName: case-insensitive uniqueness and lookups on an index.
    sa.Column("user_name_lower", LowerText, nullable=False, unique=True),
    sa.Column("external_id", sa.Text, nullable=True, index=True),
    sa.Column("active", sa.Boolean, nullable=True),
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("last_modified", sa.String(32), nullable=False),
    sa.Column("version", sa.Integer, nullable=False, default=1),
    sa.Column("doc", JsonDoc, nullable=False),
)

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("display_name_lower", LowerText, nullable=False, unique=True),
    sa.Column("external_id", sa.Text, nullable=True, index=True),
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("last_modified", sa.String(32), nullable=False),
    sa.Column("version", sa.Integer, nullable=False, default=1),
    sa.Column("doc", JsonDoc, nullable=False),
)

members = sa.Table(
    "members",
    metadata,
    # The group's pk. No foreign key (migration 0004): every membership is inserted by a write
    # holding its group's row, and deleting a group deletes its memberships itself.
    sa.Column("group_pk", sa.Integer, primary_key=True),
    # The member's SCIM id (a user or a group).
    sa.Column("member_id", sa.String(64), primary_key=True),
    sa.Column("member_type", sa.String(16), nullable=False),
    # member id -> groups: User.groups and deleting a user. Every add or remove of a member
    # writes one page of it, at a random place (measured: most of a 100-member PATCH's writes).
    sa.Index("ix_members_member_id", "member_id"),
    # SQLite: clustered on the primary key, so a membership is stored in two B-trees, not three
    # (migration 0003), and the member_id index holds group_pk.
    sqlite_with_rowid=False,
)

# Cached row counts so an unfiltered page never pays count(*) over the whole table. Each count is
# spread over COUNTER_SLOTS rows and a write bumps a random one: concurrent creates on
# PostgreSQL would otherwise all queue on one row lock until their commits.
COUNTER_SLOTS = 16
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

# Small key/value settings; "schema_version" is bumped when custom properties change, so every
# server process reloads the User schema before its next request.
settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

user_properties = sa.Table(
    "user_properties",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("name_lower", sa.String(128), nullable=False, unique=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("created", sa.String(32), nullable=False),
)

applications = sa.Table(
    "applications",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_id", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.Text, nullable=False),
    # "bearer" (the secret is the long-lived bearer token) or "client_credentials".
    sa.Column("grant_type", sa.String(32), nullable=False),
    # Space-separated scope names, e.g. "API|USER SYNC" stored as a JSON list.
    sa.Column("scopes", sa.JSON, nullable=False),
    # Access token lifetime in seconds; 0 = never expires.
    sa.Column("token_lifetime", sa.Integer, nullable=False, default=0),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("last_used", sa.String(32), nullable=True),
)

client_secrets = sa.Table(
    "client_secrets",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "app_pk",
        sa.Integer,
        sa.ForeignKey("applications.pk", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    # SHA-256 hex digest of the secret; the secret itself is shown once and never stored.
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    # First characters of the secret, so an admin can tell secrets apart.
    sa.Column("hint", sa.String(16), nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("revoked", sa.String(32), nullable=True),
    # When a request last used it, or a token it obtained (at most once a minute; 0010).
    sa.Column("last_used", sa.String(32), nullable=True),
)

access_tokens = sa.Table(
    "access_tokens",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "app_pk",
        sa.Integer,
        sa.ForeignKey("applications.pk", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
    # Unix seconds; NULL = never expires.
    sa.Column("expires", sa.BigInteger, nullable=True),
    # The client secret that obtained it (revoking that secret ends it); NULL before 0005.
    sa.Column("secret_pk", sa.Integer, nullable=True),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(32), nullable=False),
    # Who: "app" (an OAuth application, actor = client_id), "admin" or "cli".
    sa.Column("actor_type", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=True),
    sa.Column("actor_name", sa.Text, nullable=True),
    sa.Column("operation", sa.String(32), nullable=False),
    sa.Column("resource_type", sa.String(32), nullable=False),
    sa.Column("resource_id", sa.String(128), nullable=True, index=True),
    sa.Column("detail", sa.JSON, nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
)

admins = sa.Table(
    "admins",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(128), nullable=False),
    sa.Column("username_lower", sa.String(128), nullable=False, unique=True),
    # argon2id hash (PHC string).
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("last_login", sa.String(32), nullable=True),
    # Bumped by a password reset: session cookies carry it, so older sessions stop working.
    sa.Column("session_epoch", sa.Integer, nullable=False, default=0),
)

# Portal sessions: the SHA-256 digest of the random id a session cookie carries. The cookie's
# signing key is in the database too; without an id whose digest is here it signs nothing.
admin_sessions = sa.Table(
    "admin_sessions",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "admin_pk",
        sa.Integer,
        sa.ForeignKey("admins.pk", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    # Unix seconds; a session lasts SESSION_SECONDS from its sign-in (auth/admins.py).
    sa.Column("created", sa.BigInteger, nullable=False),
)

# The one-time ids of portal forms that make a secret, once used: a second submission (a
# double click, a reload) makes no second secret nobody sees. Kept a day (auth/forms.py).
form_uses = sa.Table(
    "form_uses",
    metadata,
    sa.Column("once", sa.String(64), primary_key=True),
    # Unix seconds.
    sa.Column("used", sa.BigInteger, nullable=False, index=True),
)
