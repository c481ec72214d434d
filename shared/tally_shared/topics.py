"""Every Kafka topic Tally uses, in one place.

Keys: every event about a trace (its spans, its scores, its queue items) is keyed by trace id, so one trace's
events stay in order on one partition. Events about a config or a queue itself are keyed by that object's id.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    description: str


TRACES = Topic("tally.traces", 6, "TraceIngested: trace and observation creates and partial updates (ingest)")
SCORE_COMMANDS = Topic(
    "tally.score-commands", 6, "RecordScore: scores sent by SDKs through ingest, not yet validated (ingest)"
)
SCORES = Topic("tally.scores", 6, "ScoreRecorded/Updated/Deleted, validated (scoring)")
SCORE_CONFIGS = Topic("tally.score-configs", 3, "ScoreConfigCreated/Updated/Archived (scoring)")
QUEUES = Topic("tally.queues", 6, "Queue and queue item lifecycle events (queue-router)")
DATASETS = Topic(
    "tally.datasets", 3,
    "DatasetCreated/Updated, DatasetItemUpserted/Deleted, DatasetRunItemCreated, DatasetRunDeleted (scoring)",
)
COMMENTS = Topic("tally.comments", 3, "CommentCreated on traces, observations, sessions, prompts (scoring)")
DEAD_LETTER = Topic("tally.dead-letter", 3, "Messages no consumer could parse or validate, with the reason")

ALL_TOPICS: tuple[Topic, ...] = (
    TRACES, SCORE_COMMANDS, SCORES, SCORE_CONFIGS, QUEUES, DATASETS, COMMENTS, DEAD_LETTER
)
