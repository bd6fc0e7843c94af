"""The initial schema: environments, deployments, actions (the queue) and events.

Identical to the schema the SQLite-only control plane created by hand, so an
existing database file is stamped with this revision instead of migrated.
`seq` columns never reuse a value (SQLite AUTOINCREMENT, PostgreSQL SERIAL):
action ids are derived from them.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("heartbeat_agent_id", sa.Text),
        sa.Column("heartbeat_json", sa.Text),
    )
    op.create_table(
        "deployments",
        sa.Column("environment_id", sa.Text, sa.ForeignKey("environments.id"), nullable=False),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("spec_json", sa.Text, nullable=False),
        sa.Column("desired", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("result_json", sa.Text),
        sa.Column("result_at", sa.Float),
        sa.Column("result_action_id", sa.Text),
        sa.PrimaryKeyConstraint("environment_id", "id"),
    )
    op.create_table(
        "actions",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("environment_id", sa.Text, sa.ForeignKey("environments.id"), nullable=False),
        sa.Column("deployment_id", sa.Text),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("payload_json", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("completed_at", sa.Float),
        sa.Column("completed_by", sa.Text),
        sa.Column("result_json", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("actions_by_state", "actions", ["environment_id", "state", "seq"])
    op.create_index("actions_by_deployment", "actions", ["environment_id", "deployment_id", "seq"])
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("environment_id", sa.Text, nullable=False),
        sa.Column("deployment_id", sa.Text),
        sa.Column("action_id", sa.Text),
        sa.Column("event_id", sa.Text, unique=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("agent_id", sa.Text),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("details_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("events_by_deployment", "events", ["environment_id", "deployment_id", "seq"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("actions")
    op.drop_table("deployments")
    op.drop_table("environments")
