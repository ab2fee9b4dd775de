"""Dataset formats; importing this package registers them in DATASETS."""
from tubelet.data.datasets import hmdb51, synthetic  # noqa: F401  (registration side effects)
