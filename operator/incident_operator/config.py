"""Configuration from the environment.

The serverless agent's variables keep their names and meaning (GEMINI_API_KEY,
TIMELINE_TABLE, ECS_CLUSTER_NAME, SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET,
JIRA_URL, JIRA_USER, JIRA_TOKEN, SES_SENDER, EMAIL_RECIPIENT, AWS_REGION).
Every integration is off when its settings are absent.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
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
    sns_trusted_certs_dir: Path | None = Field(
        None,
        description="Extra PEM certificates trusted for SNS signatures, for tests "
        "and private partitions; files are matched to SigningCertURL by name.",
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

    def ingest_token_set_static(self) -> frozenset[str]:
        """The tokens from INGEST_TOKENS (the file is read by the auth check)."""
        raw = self.ingest_tokens.get_secret_value()
        return frozenset(token.strip() for token in raw.split(",") if token.strip())
