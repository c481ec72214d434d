"""Read models: traces, observations, scores with their rollup, score configs, queues, processed events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "projections"


def upgrade() -> None:
    op.create_table('processed_events',
    sa.Column('consumer', sa.String(length=100), nullable=False),
    sa.Column('event_id', sa.Uuid(), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('consumer', 'event_id'),
    schema=SCHEMA
    )
    op.create_table('traces',
    sa.Column('project_id', sa.String(length=200), nullable=False),
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=True),
    sa.Column('input', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('output', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('tags', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('user_id', sa.Text(), nullable=True),
    sa.Column('session_id', sa.Text(), nullable=True),
    sa.Column('release', sa.Text(), nullable=True),
    sa.Column('version', sa.Text(), nullable=True),
    sa.Column('environment', sa.Text(), nullable=True),
    sa.Column('public', sa.Boolean(), nullable=True),
    sa.Column('dataset_run_name', sa.Text(), nullable=True),
    sa.Column('dataset_item_id', sa.Text(), nullable=True),
    sa.Column('dataset_name', sa.Text(), nullable=True),
    sa.Column('field_ts', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'id'),
    schema=SCHEMA
    )
    op.create_index('ix_traces_project_run', 'traces', ['project_id', 'dataset_run_name'], unique=False, schema=SCHEMA)
    op.create_index('ix_traces_project_ts', 'traces', ['project_id', 'timestamp'], unique=False, schema=SCHEMA)
    op.create_index('ix_traces_tags', 'traces', ['tags'], unique=False, schema=SCHEMA, postgresql_using='gin')
    op.create_table('observations',
    sa.Column('project_id', sa.String(length=200), nullable=False),
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('trace_id', sa.String(length=200), nullable=False),
    sa.Column('type', sa.Text(), nullable=True),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('parent_observation_id', sa.Text(), nullable=True),
    sa.Column('start_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('end_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completion_start_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('level', sa.Text(), nullable=True),
    sa.Column('status_message', sa.Text(), nullable=True),
    sa.Column('model', sa.Text(), nullable=True),
    sa.Column('model_parameters', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('usage_details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('cost_details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('input', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('output', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('version', sa.Text(), nullable=True),
    sa.Column('environment', sa.Text(), nullable=True),
    sa.Column('field_ts', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'id'),
    schema=SCHEMA
    )
    op.create_index('ix_observations_start', 'observations', ['project_id', 'start_time', 'id'], unique=False, schema=SCHEMA)
    op.create_index('ix_observations_trace', 'observations', ['project_id', 'trace_id'], unique=False, schema=SCHEMA)
    op.create_table('scores',
    sa.Column('project_id', sa.String(length=200), nullable=False),
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('data_type', sa.String(length=20), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('string_value', sa.Text(), nullable=True),
    sa.Column('string_values', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('trace_id', sa.String(length=200), nullable=True),
    sa.Column('observation_id', sa.String(length=200), nullable=True),
    sa.Column('session_id', sa.String(length=200), nullable=True),
    sa.Column('dataset_run_id', sa.String(length=200), nullable=True),
    sa.Column('config_id', sa.String(length=200), nullable=True),
    sa.Column('config_version', sa.Integer(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('author_user_id', sa.Text(), nullable=True),
    sa.Column('evaluator_name', sa.Text(), nullable=True),
    sa.Column('evaluator_version', sa.Text(), nullable=True),
    sa.Column('queue_id', sa.String(length=200), nullable=True),
    sa.Column('queue_item_id', sa.String(length=200), nullable=True),
    sa.Column('environment', sa.Text(), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('event_ts', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rolled_dims', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.PrimaryKeyConstraint('project_id', 'id'),
    schema=SCHEMA
    )
    op.create_index('ix_scores_config', 'scores', ['project_id', 'config_id'], unique=False, schema=SCHEMA)
    op.create_index('ix_scores_name_ts', 'scores', ['project_id', 'name', 'timestamp'], unique=False, schema=SCHEMA)
    op.create_index('ix_scores_trace', 'scores', ['project_id', 'trace_id'], unique=False, schema=SCHEMA)
    op.create_table('score_configs',
    sa.Column('project_id', sa.String(length=200), nullable=False),
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('data_type', sa.String(length=20), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('is_archived', sa.Boolean(), nullable=False),
    sa.Column('event_ts', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'id'),
    schema=SCHEMA
    )
    op.create_table('score_rollup',
    sa.Column('project_id', sa.String(length=200), nullable=False),
    sa.Column('granularity', sa.String(length=5), nullable=False),
    sa.Column('dim_kind', sa.String(length=20), nullable=False),
    sa.Column('dim_value', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('bucket', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('config_id', sa.String(length=200), nullable=False),
    sa.Column('data_type', sa.String(length=20), nullable=False),
    sa.Column('value_key', sa.Text(), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.Column('n_value', sa.BigInteger(), nullable=False),
    sa.Column('sum', sa.Numeric(), nullable=False),
    sa.Column('sum_sq', sa.Numeric(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'granularity', 'dim_kind', 'dim_value', 'name', 'bucket', 'source', 'config_id', 'data_type', 'value_key'),
    schema=SCHEMA
    )
    op.create_table('queues',
    sa.Column('project_id', sa.String(length=200), nullable=False),
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created', sa.Boolean(), nullable=False),
    sa.Column('event_ts', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'id'),
    schema=SCHEMA
    )
    op.create_table('queue_items',
    sa.Column('project_id', sa.String(length=200), nullable=False),
    sa.Column('queue_id', sa.String(length=200), nullable=False),
    sa.Column('item_id', sa.String(length=200), nullable=False),
    sa.Column('object_type', sa.String(length=20), nullable=False),
    sa.Column('object_id', sa.String(length=200), nullable=False),
    sa.Column('trace_id', sa.String(length=200), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('rule_id', sa.Text(), nullable=True),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_leased_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('flagged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'queue_id', 'item_id'),
    schema=SCHEMA
    )
    op.create_index('ix_queue_items_object', 'queue_items', ['project_id', 'object_id'], unique=False, schema=SCHEMA)
    op.create_index('ix_queue_items_trace', 'queue_items', ['project_id', 'trace_id'], unique=False, schema=SCHEMA)
    op.create_table('queue_reviews',
    sa.Column('project_id', sa.String(length=200), nullable=False),
    sa.Column('queue_id', sa.String(length=200), nullable=False),
    sa.Column('item_id', sa.String(length=200), nullable=False),
    sa.Column('reviewer', sa.String(length=200), nullable=False),
    sa.Column('leased_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('skipped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('skip_reason', sa.Text(), nullable=True),
    sa.Column('flagged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('flag_reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('project_id', 'queue_id', 'item_id', 'reviewer'),
    schema=SCHEMA
    )
    op.create_index('ix_queue_reviews_done', 'queue_reviews', ['project_id', 'queue_id', 'completed_at'], unique=False, schema=SCHEMA)


def downgrade() -> None:
    op.drop_table('queue_reviews', schema=SCHEMA)
    op.drop_table('queue_items', schema=SCHEMA)
    op.drop_table('queues', schema=SCHEMA)
    op.drop_table('score_rollup', schema=SCHEMA)
    op.drop_table('score_configs', schema=SCHEMA)
    op.drop_table('scores', schema=SCHEMA)
    op.drop_table('observations', schema=SCHEMA)
    op.drop_table('traces', schema=SCHEMA)
    op.drop_table('processed_events', schema=SCHEMA)
