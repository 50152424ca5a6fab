"""TFDS builders of emodiff-jax (one folder per dataset); importing this package registers them.

    python -m launch.prepare --dataset=synthetic_talk --data_dir=/tmp/tfds
    tfds.data_source('synthetic_talk', data_dir='/tmp/tfds')  # after `import data`
"""

from data.hdtf import hdtf_dataset_builder as hdtf
from data.mead import mead_dataset_builder as mead
from data.synthetic_talk import synthetic_talk_dataset_builder as synthetic_talk
