"""The news scoring outbox: a row per stored news item, finished once its sentiment is stored or it is
dead-lettered, so an item whose ingest activity died after storing it is still scored by the next run.

Items stored before have no record of how their scoring ended: those with scores are "scored", those with
a sentiment dead letter "dead_lettered", the others "unknown" (scored with no coin named, or never
scored; a SentimentWorkflow id of theirs may still be taken). Set `finished_at` of a row back to NULL to
have it scored again.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "news_scoring",
        sa.Column("news_id", sa.Text, primary_key=True),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("outcome", sa.Text),
    )
    op.create_index(
        "news_scoring_pending",
        "news_scoring",
        ["ingested_at"],
        postgresql_where=sa.text("finished_at IS NULL"),
    )
    # A sentiment dead letter keeps the item as JSON (NewsItem.model_dump_json), its id first.
    op.execute(
        """
        INSERT INTO news_scoring (news_id, ingested_at, finished_at, outcome)
        SELECT n.id, n.ingested_at, now(),
            CASE
                WHEN EXISTS (SELECT 1 FROM sentiment_scores s WHERE s.news_id = n.id) THEN 'scored'
                WHEN EXISTS (
                    SELECT 1 FROM dead_letters d
                    WHERE d.source = 'sentiment' AND strpos(d.raw, '{"id":"' || n.id || '"') = 1
                ) THEN 'dead_lettered'
                ELSE 'unknown'
            END
        FROM news_items n
        """
    )


def downgrade() -> None:
    op.drop_index("news_scoring_pending", "news_scoring")
    op.drop_table("news_scoring")
