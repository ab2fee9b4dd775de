"""Dataset formats; importing this package registers them in DATASETS."""
from tubelet.data.datasets import (composed, features, gaze360, hmdb51,  # noqa: F401
                                   image_folder, kinetics, multilabel, ssv2, synthetic,
                                   two_views, ucf101, video_list)
