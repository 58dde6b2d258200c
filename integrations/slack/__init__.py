"""Slack: approval requests as channel messages, decided with buttons (HTTP mode or Socket Mode)."""

from integrations.slack.integration import SlackIntegration, slack_approvers
from integrations.slack.notifier import SlackNotifier

__all__ = ["SlackIntegration", "SlackNotifier", "slack_approvers"]
