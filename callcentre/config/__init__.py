"""Configuration: the schema (:mod:`.schema`, what the domain imports) and its loader (:mod:`.loader`).

``from callcentre.config import Config, load_config, ConfigError`` and the section models keep
working for the parts that need both.
"""

from callcentre.config.loader import ENV_PREFIX, ConfigError, load_config
from callcentre.config.schema import (
    ACDConfig,
    AGIConfig,
    AgentConfig,
    AMIConfig,
    BusinessHours,
    CallbackPolicy,
    CallbackResultName,
    Category,
    CentreConfig,
    Config,
    DatabaseConfig,
    Department,
    IVRConfig,
    LoggingConfig,
    MenuAction,
    PromisesConfig,
    PromptsConfig,
    QueueLogConfig,
    ServiceConfig,
    TicketsConfig,
    TransfersConfig,
    WebConfig,
    WebhooksConfig,
    Worker,
    parse_hhmm,
)

__all__ = [
    "ACDConfig", "AGIConfig", "AMIConfig", "AgentConfig", "BusinessHours", "CallbackPolicy", "CallbackResultName",
    "Category", "CentreConfig", "Config", "ConfigError", "DatabaseConfig", "Department", "ENV_PREFIX", "IVRConfig",
    "LoggingConfig", "MenuAction", "PromisesConfig", "PromptsConfig", "ServiceConfig", "TicketsConfig", "TransfersConfig",
    "WebConfig", "WebhooksConfig", "Worker", "load_config", "parse_hhmm", "QueueLogConfig",
]
