"""Dead letters get a content key (`DeadLetter.store_key`), unique, so that the store sink reading the
dead-letter topic again after a restart does not store a letter twice. Copies stored before are removed
(the oldest row of each is kept).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The digest of DeadLetter.store_key: sha256 of source, reason, raw and `at` in epoch microseconds,
# joined by the unit separator (0x1f).
STORE_KEY_SQL = """encode(sha256(convert_to(
    source || chr(31) || reason || chr(31) || raw || chr(31)
    || ((extract(epoch FROM at) * 1000000)::bigint)::text, 'UTF8')), 'hex')"""


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("letter_key", sa.Text))
    op.execute(f"UPDATE dead_letters SET letter_key = {STORE_KEY_SQL}")
    op.execute(
        "DELETE FROM dead_letters d USING dead_letters k WHERE d.letter_key = k.letter_key AND d.id > k.id"
    )
    op.alter_column("dead_letters", "letter_key", nullable=False)
    op.create_index("dead_letters_letter_key", "dead_letters", ["letter_key"], unique=True)


def downgrade() -> None:
    op.drop_index("dead_letters_letter_key", "dead_letters")
    op.drop_column("dead_letters", "letter_key")
