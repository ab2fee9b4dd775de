"""Objectives. Importing this package registers every task."""
from tubelet.tasks import (classification, contrastive, mae_pretrain,  # noqa: F401
                           multilabel, regression)  # (registration)
