"""projections' HTTP contracts: the Langfuse-compatible reads (``/api/public``, camelCase) and the native read
models the console shows (``/api/v1``, snake_case).

Projections writes its answers with orjson straight from the rows it read, and checks them against these models
(``projections.entrypoints.http``); clients parse the same answers with them. Times are ``datetime`` (written in
UTC with ``Z``); user content (input, output, metadata, values) is ``Any``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from tally_shared.contracts import Contract, LfContract, LfOpen, LfPageMeta, Open, PageMeta

# ================================================================== Langfuse-compatible


class LfUsage(LfContract):
    input: Any
    output: Any
    total: Any
    unit: str | None


class LfObservation(LfContract):
    """Langfuse's Observation (ObservationsView): latency and time to first token in seconds, cost in USD."""

    id: str
    trace_id: str
    project_id: str
    type: str
    name: str | None
    start_time: datetime
    end_time: datetime | None
    completion_start_time: datetime | None
    model: str | None
    model_parameters: Any
    input: Any
    output: Any
    metadata: Any
    version: str | None
    level: str
    status_message: str | None
    parent_observation_id: str | None
    prompt_id: str | None
    prompt_name: str | None
    prompt_version: int | None
    usage: LfUsage
    usage_details: dict[str, Any]
    cost_details: dict[str, Any]
    environment: str
    latency: float | None
    time_to_first_token: float | None
    calculated_input_cost: Any
    calculated_output_cost: Any
    calculated_total_cost: float | None
    total_cost: float | None
    created_at: datetime
    updated_at: datetime


class LfObservationPage(LfContract):
    data: list[LfObservation]
    meta: LfPageMeta


class LfObservationV2(LfContract):
    """ObservationV2: the ``core`` fields and those of the field groups asked for (others absent)."""

    id: str
    trace_id: str
    start_time: datetime
    end_time: datetime | None
    project_id: str
    parent_observation_id: str | None
    type: str
    name: str | None = None
    level: str | None = None
    status_message: str | None = None
    version: str | None = None
    environment: str | None = None
    bookmarked: bool | None = None
    public: bool | None = None
    user_id: str | None = None
    session_id: str | None = None
    is_root_observation: bool | None = None
    completion_start_time: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    input: Any = None
    output: Any = None
    metadata: Any = None
    model: str | None = None
    internal_model_id: str | None = None
    model_parameters: Any = None
    model_id: str | None = None
    input_price: float | None = None
    output_price: float | None = None
    total_price: float | None = None
    usage_details: dict[str, Any] | None = None
    cost_details: dict[str, Any] | None = None
    total_cost: float | None = None
    usage_pricing_tier_name: str | None = None
    prompt_id: str | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    latency: float | None = None
    time_to_first_token: float | None = None
    tags: list[str] | None = None
    release: str | None = None
    trace_name: str | None = None


class LfCursorMeta(LfContract):
    cursor: str | None = None


class LfObservationV2Page(LfContract):
    data: list[LfObservationV2]
    meta: LfCursorMeta


class LfScore(LfContract):
    id: str
    trace_id: str | None
    session_id: str | None
    observation_id: str | None
    dataset_run_id: str | None
    name: str
    source: str
    timestamp: datetime
    created_at: datetime
    updated_at: datetime
    author_user_id: str | None
    comment: str | None
    metadata: Any
    config_id: str | None
    queue_id: str | None
    environment: str
    data_type: str
    value: float | None
    string_value: str | None


class LfTrace(LfContract):
    id: str
    timestamp: datetime
    name: str | None
    input: Any = None
    output: Any = None
    session_id: str | None
    release: str | None
    version: str | None
    user_id: str | None
    metadata: Any = None
    tags: list[str]
    public: bool
    environment: str
    project_id: str
    bookmarked: bool
    created_at: datetime
    updated_at: datetime
    html_path: str


class LfTraceWithDetails(LfTrace):
    """TraceWithFullDetails: latency in seconds, total cost in USD."""

    latency: float
    total_cost: float
    observations: list[LfObservation]
    scores: list[LfScore]


class LfTraceListed(LfTrace):
    """A trace of the list: ``io`` fields, observation and score ids, latency and cost as the ``fields`` asked."""

    observations: list[str] | None = None
    scores: list[str] | None = None
    latency: float | None = None
    total_cost: float | None = None


class LfTracePage(LfContract):
    data: list[LfTraceListed]
    meta: LfPageMeta


class LfOrganization(LfContract):
    id: str
    name: str


class LfProject(LfContract):
    id: str
    name: str
    organization: LfOrganization
    metadata: dict[str, Any]


class LfProjects(LfContract):
    data: list[LfProject]


class LfSession(LfContract):
    id: str
    created_at: datetime
    project_id: str
    environment: str


class LfSessionPage(LfContract):
    data: list[LfSession]
    meta: LfPageMeta


class LfSessionWithTraces(LfSession):
    traces: list[LfTrace]


class LfUsageByModel(LfContract):
    model: str | None
    input_usage: int | float | None
    output_usage: int | float | None
    total_usage: int | float | None
    count_traces: int
    count_observations: int
    total_cost: float | None


class LfDailyMetric(LfContract):
    date: str
    count_traces: int
    count_observations: int
    total_cost: float
    usage: list[LfUsageByModel]


class LfDailyMetrics(LfContract):
    data: list[LfDailyMetric]
    meta: LfPageMeta


class LfMetricsRow(LfOpen):
    """One row of a metrics query: the dimensions and the ``{aggregation}_{measure}`` metrics asked for."""

    time_dimension: Any = None


class LfMetrics(LfContract):
    data: list[dict[str, Any]]


# ================================================================== native read models


class TraceNative(Contract):
    id: str
    name: str | None
    timestamp: datetime
    input: Any
    output: Any
    metadata: Any
    tags: list[str]
    user_id: str | None
    session_id: str | None
    release: str | None
    version: str | None
    environment: str | None
    public: bool | None
    dataset_run_name: str | None
    dataset_item_id: str | None
    dataset_name: str | None
    created_at: datetime
    updated_at: datetime


class ScoreSummary(Contract):
    """Scores of one name and source on a trace: how many, their mean (numeric) or their labels."""

    name: str
    source: str
    count: int
    mean: float | None
    labels: list[str]


class TraceSummary(Contract):
    """A row of the console's trace table (no input, output or metadata)."""

    id: str
    name: str | None
    timestamp: datetime
    tags: list[str]
    user_id: str | None
    session_id: str | None
    release: str | None
    version: str | None
    environment: str | None
    public: bool | None
    dataset_run_name: str | None
    dataset_item_id: str | None
    dataset_name: str | None
    created_at: datetime
    updated_at: datetime
    latency: float
    total_cost: float
    observation_count: int
    levels: dict[str, int]
    scores: list[ScoreSummary]
    # On a trace the caller reviews blind: scores are left out and this says so.
    scores_hidden: bool | None = None


class TracePage(Contract):
    data: list[TraceSummary]
    meta: PageMeta


class ObservationNode(Contract):
    id: str
    trace_id: str
    type: str | None
    name: str | None
    parent_observation_id: str | None
    start_time: datetime | None
    end_time: datetime | None
    completion_start_time: datetime | None
    level: str | None
    status_message: str | None
    model: str | None
    model_parameters: Any
    usage_details: Any
    cost_details: Any
    input: Any
    output: Any
    metadata: Any
    version: str | None
    environment: str | None
    prompt_name: str | None
    prompt_version: int | None
    cost: float | None
    children: list[ObservationNode]


class ScoreNative(Contract):
    id: str
    name: str
    data_type: str
    value: float | None
    string_value: str | None
    string_values: list[str] | None
    trace_id: str | None
    observation_id: str | None
    session_id: str | None
    dataset_run_id: str | None
    config_id: str | None
    config_version: int | None
    comment: str | None
    source: str
    author_user_id: str | None
    evaluator_name: str | None
    evaluator_version: str | None
    queue_id: str | None
    queue_item_id: str | None
    environment: str | None
    metadata: Any
    timestamp: datetime
    created_at: datetime
    updated_at: datetime
    kind: Literal["human", "automated"]
    config_name: str | None = None


class ReviewOfItem(Contract):
    reviewer: str
    leased_at: datetime | None
    completed_at: datetime | None
    skipped_at: datetime | None
    skip_reason: str | None
    flagged_at: datetime | None
    flag_reason: str | None
    status: Literal["COMPLETED", "SKIPPED", "FLAGGED", "IN_PROGRESS"]


class QueueItemOfTrace(Contract):
    queue_id: str
    queue_name: str | None
    item_id: str
    object_type: str
    object_id: str
    added_at: datetime | None
    completed_at: datetime | None
    removed_at: datetime | None
    flagged_at: datetime | None
    reason: str | None
    status: Literal["REMOVED", "COMPLETED", "IN_PROGRESS", "PENDING"]
    reviews: list[ReviewOfItem]


class TraceDetail(Contract):
    """The trace, its observation tree, every score and its queue items with their reviews."""

    trace: TraceNative
    latency: float
    total_cost: float
    observations: list[ObservationNode]
    scores: list[ScoreNative]
    queue_items: list[QueueItemOfTrace]
    scores_hidden: bool | None = None


class SessionSummary(Contract):
    id: str
    trace_count: int
    first_at: datetime
    last_at: datetime
    user_count: int


class SessionPage(Contract):
    data: list[SessionSummary]
    meta: PageMeta


class ItemCounts(Contract):
    total: int
    completed: int
    in_progress: int
    skipped: int
    pending: int
    flagged: int
    removed: int


class QueueProgress(Contract):
    queue_id: str
    name: str | None
    known: bool
    reviewers_per_item: int | None
    score_config_ids: list[str]
    is_archived: bool
    items: ItemCounts
    total_items: int
    completed_items: int
    completion_rate: float | None


class QueueProgressList(Contract):
    data: list[QueueProgress]


class ReviewerProgress(Contract):
    reviewer: str
    completed: int
    skipped: int
    flagged: int
    in_progress: int
    first_completed_at: datetime | None
    last_completed_at: datetime | None


class ThroughputPoint(Contract):
    bucket: datetime
    reviews_completed: int
    items_completed: int


class Throughput(Contract):
    bucket: Literal["hour", "day"]
    points: list[ThroughputPoint]


class QueueProgressDetail(QueueProgress):
    reviewers: list[ReviewerProgress]
    throughput: Throughput


class AnalyticsFilter(Contract):
    dimension: str
    value: str


class ScoreSeries(Open):
    """One score name, source and config: count, mean with its 95% interval, distribution, per-bucket points."""

    name: str
    source: str
    config_id: str | None = None
    data_type: str


class ScoreAnalytics(Contract):
    bucket: Literal["hour", "day"]
    served_from: Literal["rollup", "scores"]
    truncated: bool
    filters: list[AnalyticsFilter]
    series: list[ScoreSeries]


class ScoreNameKind(Contract):
    name: str
    kind: Literal["human", "automated"]


class ExperimentRun(Contract):
    dataset_name: str | None
    dataset_run_name: str
    traces: int
    items: int
    first_trace_at: datetime | None
    last_trace_at: datetime | None
    score_names: list[ScoreNameKind]


class ExperimentRuns(Contract):
    data: list[ExperimentRun]


class WinRate(Contract):
    run_a: str
    run_b: str
    score_name: str | None
    higher_is_better: bool
    items_compared: int
    wins: int
    losses: int
    ties: int
    win_rate: float | None
    ci_low: float | None
    ci_high: float | None
    method: str


class ItemAcrossRuns(Contract):
    dataset_item_id: str
    # run name -> {trace_id, scores: {score name -> {human, automated}}}
    runs: dict[str, dict[str, Any]]


class RunAggregate(Contract):
    name: str
    # run name -> {human|automated -> count, mean and interval, labels}
    runs: dict[str, dict[str, Any]]


class RunComparison(Contract):
    runs: list[str]
    aggregates: list[RunAggregate]
    items: list[ItemAcrossRuns]
    win_rate: WinRate | None = None


class Disputed(Contract):
    object_type: str
    object_id: str
    trace_id: str | None
    ratings: dict[str, Any]
    disagreement: float | None


class Agreement(Open):
    """Krippendorff's alpha, Cohen's kappa per reviewer pair, percent agreement (the statistics' own keys) and
    the most disputed objects."""

    queue_id: str | None
    config_id: str | None
    score_name: str | None
    data_type: str | None
    most_disputed: list[Disputed]


class ReviewerLabel(Contract):
    reviewer: str
    value: float | None
    string_value: str | None
    comment: str | None


class Disagreement(Contract):
    object_type: str
    object_id: str
    trace_id: str | None
    human: Any
    automated: Any
    gap: float
    evaluator_version: str | None
    automated_comment: str | None
    reviewers: list[ReviewerLabel]


class CalibrationTrend(Contract):
    bucket: str
    points: list[dict[str, Any]]


class Calibration(Open):
    """An automated score against human consensus: the statistics' own keys (n, kappa, spearman, mae, ...), a
    trend, a breakdown per evaluator version and the biggest disagreements."""

    config_id: str | None
    score_name: str | None
    evaluator: str
    data_type: str | None
    trend: CalibrationTrend
    by_evaluator_version: list[dict[str, Any]]
    biggest_disagreements: list[Disagreement]


ObservationNode.model_rebuild()

__all__ = [
    "Agreement", "AnalyticsFilter", "Calibration", "CalibrationTrend", "Disagreement", "Disputed", "ExperimentRun",
    "ExperimentRuns", "ItemAcrossRuns", "ItemCounts", "LfCursorMeta", "LfDailyMetric", "LfDailyMetrics",
    "LfMetrics", "LfMetricsRow", "LfObservation", "LfObservationPage", "LfObservationV2", "LfObservationV2Page",
    "LfOrganization", "LfProject", "LfProjects", "LfScore", "LfSession", "LfSessionPage", "LfSessionWithTraces",
    "LfTrace", "LfTraceListed", "LfTracePage", "LfTraceWithDetails", "LfUsage", "LfUsageByModel", "ObservationNode",
    "QueueItemOfTrace", "QueueProgress", "QueueProgressDetail", "QueueProgressList", "ReviewOfItem",
    "ReviewerLabel", "ReviewerProgress", "RunAggregate", "RunComparison", "ScoreAnalytics", "ScoreNameKind",
    "ScoreNative", "ScoreSeries", "ScoreSummary", "SessionPage", "SessionSummary", "Throughput", "ThroughputPoint",
    "TraceDetail", "TraceNative", "TracePage", "TraceSummary", "WinRate",
]
