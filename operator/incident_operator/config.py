"""Configuration from the environment.

The serverless agent's variables keep their names and meaning (GEMINI_API_KEY,
TIMELINE_TABLE, ECS_CLUSTER_NAME, SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET,
JIRA_URL, JIRA_USER, JIRA_TOKEN, SES_SENDER, EMAIL_RECIPIENT, AWS_REGION).
Every integration is off when its settings are absent.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
