"""Objectives. Importing this package registers every task."""
from tubelet.tasks import classification  # noqa: F401  (registers "classification")
