"""Builds a clip dataset as ArrayRecord shards (TFDS), printing the skipped-clip summary.

  python -m launch.prepare --dataset=synthetic_talk --data_dir=/tmp/tfds [--resolution=64]
  python -m launch.prepare --dataset=mead --source_dir=/data/MEAD --data_dir=/tmp/tfds
  python -m launch.prepare --dataset=hdtf --source_dir=/data/HDTF/clips --data_dir=/tmp/tfds

Read back with `tfds.data_source(name, data_dir=...)` after `import data`, or
`emodiff_jax.input.records.RecordReader`.
"""

from absl import app
from absl import flags
import tensorflow_datasets as tfds

import data  # registers the builders

_DATASET = flags.DEFINE_enum("dataset", None, ["synthetic_talk", "mead", "hdtf"], "Dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir to write into.")
_SOURCE_DIR = flags.DEFINE_string("source_dir", None, "Raw MEAD/HDTF folder (manual dir).")
_RESOLUTION = flags.DEFINE_integer("resolution", 64, "Face crop side: picks config '<r>px'.")
_CONFIG = flags.DEFINE_string("config", None, "Builder config name (overrides --resolution).")
flags.mark_flags_as_required(["dataset", "data_dir"])

_BUILDERS = {"synthetic_talk": data.synthetic_talk.Builder, "mead": data.mead.Builder,
             "hdtf": data.hdtf.Builder}


def main(argv) -> None:
  del argv
  name = _DATASET.value
  if name != "synthetic_talk" and not _SOURCE_DIR.value:
    raise app.UsageError(f"--source_dir is required for {name}")
  builder = _BUILDERS[name](data_dir=_DATA_DIR.value,
                            config=_CONFIG.value or f"{_RESOLUTION.value}px")
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=_SOURCE_DIR.value))
  for split, stats in builder.skip_stats.items():
    print(f"{name}/{split}: {stats.summary()}")
    for reason, examples in sorted(stats.examples.items()):
      for example in examples:
        print(f"  {reason}: {example}")
  print(f"wrote {builder.data_dir}")


if __name__ == "__main__":
  app.run(main)
