"""queue_router schema: queues, rules, items, slots, reviews, routing decisions, trace summaries, outbox.

Revision ID: 0001
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.Uuid(), nullable=False),
    sa.Column('topic', sa.String(length=100), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    schema='queue_router'
    )
    op.create_index('ix_outbox_unsent', 'outbox', ['id'], unique=False, schema='queue_router', postgresql_where=sa.text('sent_at IS NULL'))
    op.create_table('processed_events',
    sa.Column('consumer', sa.String(length=100), nullable=False),
    sa.Column('event_id', sa.Uuid(), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('consumer', 'event_id'),
    schema='queue_router'
    )
    op.create_table('queues',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('score_configs', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('reviewers', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('reviewers_per_item', sa.Integer(), server_default='1', nullable=False),
    sa.Column('lease_seconds', sa.Integer(), server_default='600', nullable=False),
    sa.Column('blind', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('is_archived', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'name', name='uq_queues_project_name'),
    schema='queue_router'
    )
    op.create_table('routing_decisions',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('queue_id', sa.String(length=64), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=True),
    sa.Column('object_type', sa.String(length=16), nullable=False),
    sa.Column('object_id', sa.String(length=200), nullable=False),
    sa.Column('item_id', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('event_id', sa.Uuid(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    schema='queue_router'
    )
    op.create_index('ix_decisions_object', 'routing_decisions', ['queue_id', 'object_type', 'object_id'], unique=False, schema='queue_router')
    op.create_index('uq_decisions_once', 'routing_decisions', ['queue_id', 'rule_id', 'object_type', 'object_id', 'outcome'], unique=True, schema='queue_router', postgresql_nulls_not_distinct=True)
    op.create_table('rule_daily_counts',
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('count', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('rule_id', 'day'),
    schema='queue_router'
    )
    op.create_table('rule_versions',
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('project_id'),
    schema='queue_router'
    )
    op.create_table('trace_scores',
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('score_id', sa.String(length=200), nullable=False),
    sa.Column('trace_id', sa.String(length=200), nullable=False),
    sa.Column('observation_id', sa.String(length=200), nullable=True),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('evaluator_name', sa.Text(), nullable=True),
    sa.Column('data_type', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Double(), nullable=True),
    sa.Column('string_value', sa.Text(), nullable=True),
    sa.Column('string_values', postgresql.ARRAY(sa.Text()), nullable=True),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('project_id', 'score_id'),
    schema='queue_router'
    )
    op.create_index('ix_scores_trace', 'trace_scores', ['project_id', 'trace_id'], unique=False, schema='queue_router')
    op.create_table('trace_summaries',
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('trace_id', sa.String(length=200), nullable=False),
    sa.Column('has_trace', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=True),
    sa.Column('tags', postgresql.ARRAY(sa.Text()), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('environment', sa.Text(), nullable=True),
    sa.Column('release', sa.Text(), nullable=True),
    sa.Column('user_id', sa.Text(), nullable=True),
    sa.Column('session_id', sa.Text(), nullable=True),
    sa.Column('dataset_run_name', sa.Text(), nullable=True),
    sa.Column('has_error', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('latency', sa.Double(), nullable=True),
    sa.Column('total_cost', sa.Double(), nullable=True),
    sa.Column('input_tokens', sa.Double(), nullable=True),
    sa.Column('output_tokens', sa.Double(), nullable=True),
    sa.Column('total_tokens', sa.Double(), nullable=True),
    sa.Column('observation_types', postgresql.ARRAY(sa.Text()), nullable=True),
    sa.Column('observation_names', postgresql.ARRAY(sa.Text()), nullable=True),
    sa.Column('state', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'trace_id'),
    schema='queue_router'
    )
    op.create_index('ix_summaries_project_time', 'trace_summaries', ['project_id', 'timestamp'], unique=False, schema='queue_router')
    op.create_table('items',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('queue_id', sa.String(length=64), nullable=False),
    sa.Column('object_type', sa.String(length=16), nullable=False),
    sa.Column('object_id', sa.String(length=200), nullable=False),
    sa.Column('trace_id', sa.String(length=200), nullable=True),
    sa.Column('status', sa.String(length=16), server_default='PENDING', nullable=False),
    sa.Column('reviewers_per_item', sa.Integer(), server_default='1', nullable=False),
    sa.Column('assignees', postgresql.ARRAY(sa.String(length=200)), nullable=True),
    sa.Column('completions', sa.Integer(), server_default='0', nullable=False),
    sa.Column('flags', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('added_by', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('removed_by', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['queue_id'], ['queue_router.queues.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('queue_id', 'object_type', 'object_id', name='uq_items_queue_object'),
    schema='queue_router'
    )
    op.create_index('ix_items_project_trace', 'items', ['project_id', 'trace_id'], unique=False, schema='queue_router')
    op.create_index('ix_items_queue_status_created', 'items', ['queue_id', 'status', 'created_at'], unique=False, schema='queue_router')
    op.create_table('rules',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('queue_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('filter', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('target', sa.String(length=16), server_default='TRACE', nullable=False),
    sa.Column('sample_rate', sa.Double(), server_default='1', nullable=False),
    sa.Column('daily_cap', sa.Integer(), nullable=True),
    sa.Column('active', sa.Boolean(), server_default='true', nullable=False),
    sa.Column('is_deleted', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['queue_id'], ['queue_router.queues.id'], ),
    sa.PrimaryKeyConstraint('id'),
    schema='queue_router'
    )
    op.create_index(op.f('ix_queue_router_rules_project_id'), 'rules', ['project_id'], unique=False, schema='queue_router')
    op.create_index(op.f('ix_queue_router_rules_queue_id'), 'rules', ['queue_id'], unique=False, schema='queue_router')
    op.create_table('item_slots',
    sa.Column('item_id', sa.String(length=64), nullable=False),
    sa.Column('slot_no', sa.Integer(), nullable=False),
    sa.Column('queue_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='open', nullable=False),
    sa.Column('reviewer', sa.String(length=200), nullable=True),
    sa.Column('lease_id', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('assignees', postgresql.ARRAY(sa.String(length=200)), nullable=True),
    sa.Column('item_created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['queue_router.items.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id', 'slot_no'),
    schema='queue_router'
    )
    op.create_index('ix_slots_claimable', 'item_slots', ['queue_id', 'item_created_at', 'item_id', 'slot_no'], unique=False, schema='queue_router', postgresql_where=sa.text("state <> 'done'"))
    op.create_table('reviews',
    sa.Column('item_id', sa.String(length=64), nullable=False),
    sa.Column('reviewer', sa.String(length=200), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('queue_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('lease_id', sa.String(length=64), nullable=True),
    sa.Column('slot_no', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['item_id'], ['queue_router.items.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id', 'reviewer'),
    schema='queue_router'
    )
    op.create_index('ix_reviews_queue_completed', 'reviews', ['queue_id', 'completed_at'], unique=False, schema='queue_router')
    op.create_index('ix_reviews_queue_reviewer', 'reviews', ['queue_id', 'reviewer', 'status'], unique=False, schema='queue_router')
    


def downgrade() -> None:
    """Downgrade schema."""
    
    op.drop_index('ix_reviews_queue_reviewer', table_name='reviews', schema='queue_router')
    op.drop_index('ix_reviews_queue_completed', table_name='reviews', schema='queue_router')
    op.drop_table('reviews', schema='queue_router')
    op.drop_index('ix_slots_claimable', table_name='item_slots', schema='queue_router', postgresql_where=sa.text("state <> 'done'"))
    op.drop_table('item_slots', schema='queue_router')
    op.drop_index(op.f('ix_queue_router_rules_queue_id'), table_name='rules', schema='queue_router')
    op.drop_index(op.f('ix_queue_router_rules_project_id'), table_name='rules', schema='queue_router')
    op.drop_table('rules', schema='queue_router')
    op.drop_index('ix_items_queue_status_created', table_name='items', schema='queue_router')
    op.drop_index('ix_items_project_trace', table_name='items', schema='queue_router')
    op.drop_table('items', schema='queue_router')
    op.drop_index('ix_summaries_project_time', table_name='trace_summaries', schema='queue_router')
    op.drop_table('trace_summaries', schema='queue_router')
    op.drop_index('ix_scores_trace', table_name='trace_scores', schema='queue_router')
    op.drop_table('trace_scores', schema='queue_router')
    op.drop_table('rule_versions', schema='queue_router')
    op.drop_table('rule_daily_counts', schema='queue_router')
    op.drop_index('uq_decisions_once', table_name='routing_decisions', schema='queue_router', postgresql_nulls_not_distinct=True)
    op.drop_index('ix_decisions_object', table_name='routing_decisions', schema='queue_router')
    op.drop_table('routing_decisions', schema='queue_router')
    op.drop_table('queues', schema='queue_router')
    op.drop_table('processed_events', schema='queue_router')
    op.drop_index('ix_outbox_unsent', table_name='outbox', schema='queue_router', postgresql_where=sa.text('sent_at IS NULL'))
    op.drop_table('outbox', schema='queue_router')
    
