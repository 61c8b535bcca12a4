"""Build the notifier from the settings: every channel that is configured, none that is not.

Slack needs SLACK_BOT_TOKEN; Jira needs JIRA_URL, JIRA_USER and JIRA_TOKEN;
email needs SES_SENDER; PagerDuty needs PAGERDUTY_ROUTING_KEY or
PAGERDUTY_ROUTING_KEYS; outbound webhooks need OUTBOUND_WEBHOOKS. With none
of them the log is the only channel.

Each channel's client library is imported only when that channel is
configured: an operator without Slack or Jira does not carry their SDKs.
"""

from __future__ import annotations

import logging

import boto3
from botocore.config import Config

from ..aws_calls import timed
from ..config import Settings, outbound_webhooks, parse_routing_keys
from . import Notifier
from .channel import Channel
from .log import LogNotifier

log = logging.getLogger(__name__)

# Few attempts and short timeouts: the fan-out bounds the whole, and retries.
AWS_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 3}, connect_timeout=3, read_timeout=5
)


def build_channels(settings: Settings) -> list[Channel]:
    channels: list[Channel] = []
    if settings.slack_bot_token:
        from ..slack.api import slack_client
        from ..slack.channel import SlackChannel

        client = slack_client(
            token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url
        )
        channels.append(
            SlackChannel(
                client=client,
                default_channel=settings.slack_channel,
                link_template=settings.incident_link_template,
            )
        )
    if settings.jira_url and settings.jira_user and settings.jira_token:
        from .jira import JiraChannel

        channels.append(
            JiraChannel(
                server=settings.jira_url,
                user=settings.jira_user,
                token=settings.jira_token.get_secret_value(),
                project=settings.jira_project,
                issue_type=settings.jira_issue_type,
                link_template=settings.incident_link_template,
            )
        )
    if settings.ses_sender:
        from .email import (
            SES_CONFIG,
            DynamoEmailClaims,
            EmailChannel,
            EmailClaims,
            MemoryEmailClaims,
        )

        claims: EmailClaims = MemoryEmailClaims()
        if settings.timeline_table:
            dynamodb = timed(
                boto3.client("dynamodb", region_name=settings.aws_region, config=AWS_CONFIG)
            )
            claims = DynamoEmailClaims(client=dynamodb, table=settings.timeline_table)
        recipients = [r.strip() for r in (settings.email_recipient or "").split(",") if r.strip()]
        channels.append(
            EmailChannel(
                client=timed(
                    boto3.client("ses", region_name=settings.aws_region, config=SES_CONFIG)
                ),
                claims=claims,
                sender=settings.ses_sender,
                recipients=recipients,
                link_template=settings.incident_link_template,
            )
        )
    channels.extend(_http_channels(settings))
    return channels


def _http_channels(settings: Settings) -> list[Channel]:
    """PagerDuty and the outbound webhooks: events in paced, retried lanes."""
    named = settings.pagerduty_routing_keys.get_secret_value()
    default = settings.pagerduty_routing_key
    paging = bool(default or named.strip())
    hooks = outbound_webhooks(settings.outbound_webhooks)
    if not paging and not hooks:
        return []
    from .delivered import Delivered, DynamoDelivered, MemoryDelivered

    delivered: Delivered = MemoryDelivered()
    if settings.timeline_table:
        dynamodb = timed(
            boto3.client("dynamodb", region_name=settings.aws_region, config=AWS_CONFIG)
        )
        delivered = DynamoDelivered(client=dynamodb, table=settings.timeline_table)
    # A channel's tell returns before the fan-out's deadline; its event waits on.
    wait = settings.notify_timeout_seconds / 2
    channels: list[Channel] = []
    if paging:
        from .pagerduty import DEFAULT_KEY_NAME, PagerDutyChannel

        keys = parse_routing_keys(named)
        if default:
            keys[DEFAULT_KEY_NAME] = default.get_secret_value()
        channels.append(
            PagerDutyChannel(
                routing_keys=keys,
                delivered=delivered,
                events_url=settings.pagerduty_events_url,
                per_minute=settings.pagerduty_events_per_minute,
                wait=wait,
                backoff=settings.notify_retry_backoff_seconds,
                link_template=settings.incident_link_template,
            )
        )
    if hooks:
        from .webhooks import Target, WebhooksChannel

        targets = [Target(url=hook.url, secret=hook.secret.get_secret_value()) for hook in hooks]
        channels.append(
            WebhooksChannel(
                targets=targets,
                delivered=delivered,
                wait=wait,
                backoff=settings.notify_retry_backoff_seconds,
                link_template=settings.incident_link_template,
            )
        )
    return channels


def build_notifier(settings: Settings) -> Notifier:
    channels = build_channels(settings)
    if not channels:
        return LogNotifier()
    from .fanout import FanOutNotifier

    log.info("notification channels", extra={"channels": [c.name for c in channels]})
    return FanOutNotifier(
        channels,
        timeout=settings.notify_timeout_seconds,
        attempts=settings.notify_retry_attempts,
        breaker_failures=settings.notify_breaker_failures,
        breaker_cooloff=settings.notify_breaker_cooloff_seconds,
    )
