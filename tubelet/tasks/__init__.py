"""Objectives. Importing this package registers every task."""
from tubelet.tasks import classification, mae_pretrain, regression  # noqa: F401  (registration)
