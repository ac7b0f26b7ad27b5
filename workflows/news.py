"""NewsIngestWorkflow polls the news sources (on a Temporal Schedule) and starts one SentimentWorkflow
per new item; SentimentWorkflow asks the local LLM for per-coin sentiment, with retries.

    temporal schedule describe --schedule-id news-ingest
    temporal workflow list --query 'WorkflowType="SentimentWorkflow"'

A child's workflow id holds the news id and duplicates are rejected, so an item delivered twice is
scored once. The ingest activity's items include stored ones whose scoring never finished (an earlier run
died after storing them: the outbox in docs/news.md), so every stored item gets its child. Transient LLM errors (server down, timeouts, 5xx) are retried with backoff for as long as
it takes; output that stays invalid after the agent's bounded retries fails the activity for good, after
the activity has put the item in the dead-letter table.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.news import NewsActivities
    from cryptopredict import temporal_policies as policies
    from cryptopredict import workflow_types
    from cryptopredict.models.news_flow import (
        NewsIngestInput,
        NewsIngestResult,
        SentimentInput,
        SentimentResult,
    )
    from cryptopredict.topics import sentiment_workflow_id


@workflow.defn(name=workflow_types.NEWS_INGEST)
class NewsIngestWorkflow:
    @workflow.run
    async def run(self, request: NewsIngestInput) -> NewsIngestResult:
        result = await workflow.execute_activity_method(
            NewsActivities.ingest_news,
            request,
            **policies.INGEST_NEWS(),
        )
        started = 0
        for item in result.new:
            try:
                await workflow.start_child_workflow(
                    SentimentWorkflow.run,
                    SentimentInput(item=item, llm_task_queue=request.llm_task_queue),
                    id=sentiment_workflow_id(item.id),
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                )
                started += 1
            except WorkflowAlreadyStartedError:
                workflow.logger.info("news item %s is already being scored", item.id)
        return result.model_copy(update={"sentiment_workflows_started": started})


@workflow.defn(name=workflow_types.SENTIMENT)
class SentimentWorkflow:
    @workflow.run
    async def run(self, request: SentimentInput) -> SentimentResult:
        return await workflow.execute_activity_method(
            NewsActivities.score_news,
            request,
            task_queue=request.llm_task_queue,
            **policies.SCORE_NEWS(),
        )
