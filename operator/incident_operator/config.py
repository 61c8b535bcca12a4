"""Configuration from the environment.

The serverless agent's variables keep their names and meaning (GEMINI_API_KEY,
TIMELINE_TABLE, ECS_CLUSTER_NAME, SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET,
JIRA_URL, JIRA_USER, JIRA_TOKEN, SES_SENDER, EMAIL_RECIPIENT, AWS_REGION).
Every integration is off when its settings are absent.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


class OutboundWebhook(BaseModel):
    """One receiver of the transitions' CloudEvents (OUTBOUND_WEBHOOKS)."""

    url: str = Field(pattern=r"^https?://", description="Where events are POSTed.")
    secret: SecretStr = Field(min_length=1, description="Signs the events (HMAC-SHA256).")


def parse_routing_keys(raw: str) -> dict[str, str]:
    """`name=key,name=key` as a dict; ValueError numbering the entry that is not."""
    keys: dict[str, str] = {}
    for index, entry in enumerate(part.strip() for part in raw.split(",")):
        if not entry:
            continue
        name, equals, key = entry.partition("=")
        if not equals or not name.strip() or not key.strip():
            # Which entry, never what it holds: it may be a bare key.
            raise ValueError(f"PAGERDUTY_ROUTING_KEYS: entry {index + 1}: expected name=key")
        keys[name.strip()] = key.strip()
    return keys


_OUTBOUND_WEBHOOKS = TypeAdapter(list[OutboundWebhook])


def outbound_webhooks(raw: SecretStr) -> list[OutboundWebhook]:
    """OUTBOUND_WEBHOOKS parsed; ValueError saying where it is wrong, never echoing it."""
    text = raw.get_secret_value().strip()
    if not text:
        return []
    try:
        return _OUTBOUND_WEBHOOKS.validate_json(text)
    except ValidationError as error:
        where = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'the value'}: {e['msg']}"
            for e in error.errors(include_input=False)
        )
        raise ValueError(
            'OUTBOUND_WEBHOOKS must be a JSON list of {"url": ..., "secret": ...}: ' + where
        ) from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Where Incidents live. The webhook creates them here; the operator
    # watches here (or every namespace when empty).
    incident_namespace: str = Field("default", description="Namespace of new Incidents.")

    # --- ingest webhook ---------------------------------------------------
    ingest_tokens: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated bearer tokens accepted by the ingest endpoints.",
    )
    ingest_tokens_file: Path | None = Field(
        None,
        description="File with one token per line (a mounted Secret); re-read when it changes.",
    )
    ingest_auth_disabled: bool = Field(
        False, description="Accept unauthenticated alarms. Only for closed networks."
    )
    ingest_max_body_bytes: int = Field(256 * 1024, ge=1024, description="Request size limit.")
    ingest_max_alerts_per_request: int = Field(
        100,
        ge=1,
        description="The most alerts one request may carry (an Alertmanager group); a request "
        "with more is refused whole with 413 before anything is written.",
    )
    ingest_max_in_flight: int = Field(
        128,
        ge=1,
        description="The most alarm requests the webhook works on at once (a request counts "
        "once its body is in); past it a request is answered 503 with Retry-After at once and "
        "changes nothing. Health, readiness, metrics and Slack actions are never refused.",
    )
    ingest_write_interval_seconds: float = Field(
        0.5,
        ge=0,
        le=5,
        description="An Incident written less than this ago collects further deliveries "
        "until the interval is up, then counts them in one write: a storm costs the API "
        "server about one write per Incident per interval, and a sender waits at most about "
        "this much more. An idle Incident is written at once. 0: no pacing.",
    )
    ingest_docs_enabled: bool = Field(
        False,
        description="Serve the OpenAPI document (/openapi.json) and Swagger UI (/docs, its "
        "assets from the package), unauthenticated. Off: all of them 404.",
    )
    sns_topic_arns: str = Field(
        "",
        description="Comma-separated SNS topic ARNs (globs) accepted on /alerts/sns; "
        "empty: none, every SNS message is refused. A valid signature proves a message "
        "came from SNS, not from your topic.",
    )
    sns_max_age_seconds: int = Field(
        3600,
        ge=60,
        le=7 * 24 * 3600,
        description="How old an SNS message's signed Timestamp may be (plus 5 minutes of "
        "clock skew). SNS stops retrying a delivery within 3,600 s.",
    )
    sns_cert_fetches_per_minute: int = Field(
        10,
        ge=1,
        le=600,
        description="New SNS signing certificates fetched per minute at most; past it a "
        "message needing another one gets 503 (SNS retries).",
    )
    sns_trusted_certs_dir: Path | None = Field(
        None,
        description="Local copies of SNS signing certificates, named like the last "
        "part of their SigningCertURL; used instead of fetching them.",
    )

    # --- the serverless agent's settings, kept --------------------------
    gemini_api_key: SecretStr | None = None
    timeline_table: str | None = None
    ecs_cluster_name: str | None = None
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    jira_url: str | None = None
    jira_user: str | None = None
    jira_token: SecretStr | None = None
    ses_sender: str | None = None
    email_recipient: str | None = None
    aws_region: str = "us-east-1"

    # --- new settings for the operator ----------------------------------
    gemini_model: str = Field("gemini-2.5-flash", description="Default Gemini model.")
    gemini_base_url: str | None = Field(
        None, description="Gemini API endpoint override (proxies, tests)."
    )
    gemini_timeout_seconds: float = Field(
        20.0,
        gt=0,
        le=300,
        description="Per Gemini attempt (the SDK makes 3); past the last, the Incident escalates.",
    )
    jira_project: str = Field("SCRUM", description="Default Jira project key.")
    timeline_ttl_days: int = Field(90, ge=1, description="Timeline entries expire after this.")
    watch_namespaces: str = Field(
        "", description="Comma-separated namespaces the operator watches; empty: all."
    )

    # --- notifications (Slack, Jira, email) -------------------------------
    slack_channel: str | None = Field(
        None,
        description="Default Slack channel ID (C0123...) when the policy names none. An ID, "
        "not a #name: finding an earlier message after a crash reads the channel's history.",
    )
    slack_api_url: str | None = Field(
        None, description="Slack Web API base URL override (proxies, tests); ends in /api/."
    )
    jira_issue_type: str = Field("Task", description="Issue type when the policy names none.")
    incident_link_template: str | None = Field(
        None,
        description="Link to an Incident in Jira issues and emails, with {namespace}, {name} "
        "and {uid}, e.g. https://console.example.com/incidents/{namespace}/{name}.",
    )
    notify_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="The most one channel may take per transition."
    )
    notify_retry_attempts: int = Field(
        3, ge=1, le=10, description="Attempts per channel per transition (backoff between)."
    )
    notify_breaker_failures: int = Field(
        3, ge=1, description="Failed transitions in a row that open a channel's breaker."
    )
    notify_breaker_cooloff_seconds: float = Field(
        60.0, ge=0, description="How long an open breaker skips its channel."
    )

    # --- PagerDuty and outbound webhooks -------------------------------------
    pagerduty_routing_key: SecretStr | None = Field(
        None,
        description="Events API v2 routing key (integration key) of the PagerDuty service "
        "paged by default; with it (or PAGERDUTY_ROUTING_KEYS) PagerDuty is a channel.",
    )
    pagerduty_routing_keys: SecretStr = Field(
        SecretStr(""),
        description="More routing keys, by name: name=key,name=key; a policy pages one with "
        "notify.pagerduty.routingKey: <name>.",
    )
    pagerduty_events_url: str = Field(
        "https://events.pagerduty.com/v2/enqueue",
        description="Events API v2 endpoint (the EU one, proxies, tests).",
    )
    pagerduty_events_per_minute: float = Field(
        100.0,
        gt=0,
        le=6000,
        description="Events sent per minute per routing key at most (PagerDuty takes about "
        "120 and answers 429 past it); the rest wait their turn, never dropped.",
    )
    pagerduty_webhook_secrets: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated secrets of PagerDuty webhook (v3) subscriptions; with "
        "one, POST /pagerduty/webhook takes incident.acknowledged as an acknowledgement.",
    )
    outbound_webhooks: SecretStr = Field(
        SecretStr(""),
        description='JSON list of {"url": ..., "secret": ...}: each gets every transition as '
        "a signed CloudEvent.",
    )
    notify_retry_backoff_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="First retry delay of a PagerDuty or webhook event after a 429, 5xx or "
        "no answer; doubled per attempt up to a minute, retried until taken.",
    )

    @field_validator("outbound_webhooks")
    @classmethod
    def _outbound_webhooks_parse(cls, value: SecretStr) -> SecretStr:
        outbound_webhooks(value)
        return value

    @field_validator("pagerduty_routing_keys")
    @classmethod
    def _routing_keys_parse(cls, value: SecretStr) -> SecretStr:
        parse_routing_keys(value.get_secret_value())
        return value

    # --- the read-only web UI (`incident-operator ui`, ui/) ------------------
    ui_tokens: SecretStr = Field(
        SecretStr(""), description="Comma-separated bearer tokens accepted by the web UI."
    )
    ui_tokens_file: Path | None = Field(
        None,
        description="File with one UI token per line (a mounted Secret); re-read when it changes.",
    )
    ui_auth_proxy_header: str | None = Field(
        None,
        description="Trust this request header as the signed-in user (e.g. X-Forwarded-User "
        "from oauth2-proxy); only when nothing but the proxy can reach the UI.",
    )
    ui_auth_disabled: bool = Field(
        False, description="Serve the UI to anyone who reaches it. Only for closed networks."
    )
    ui_public_url: str | None = Field(
        None,
        description="The UI's address as people reach it, e.g. https://incidents.example.com; "
        "set, INCIDENT_LINK_TEMPLATE defaults to an Incident's page there.",
    )

    @model_validator(mode="after")
    def link_to_the_ui(self) -> Settings:
        """Jira, email and Slack link to the UI's page of an Incident, unless told otherwise."""
        if self.incident_link_template is None and self.ui_public_url:
            base = self.ui_public_url.rstrip("/")
            self.incident_link_template = base + "/incidents/{namespace}/{name}"
        return self

    def ingest_token_set_static(self) -> frozenset[str]:
        """The tokens from INGEST_TOKENS (the file is read by the auth check)."""
        raw = self.ingest_tokens.get_secret_value()
        return frozenset(token.strip() for token in raw.split(",") if token.strip())

    def ui_token_set_static(self) -> frozenset[str]:
        """The tokens from UI_TOKENS (the file is read by the UI's auth check)."""
        raw = self.ui_tokens.get_secret_value()
        return frozenset(token.strip() for token in raw.split(",") if token.strip())
