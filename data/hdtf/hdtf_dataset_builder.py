"""HDTF (Zhang et al., CVPR 2021) as 25 fps face-crop clips with 16 kHz audio, in ArrayRecord.

Source layout (the TFDS manual dir, `--source_dir`): a folder of downloaded and trimmed clips,

    <source_dir>/<name>.mp4                      (video with its own audio track)
    <source_dir>/expressions/<name>.npy          (optional; or <source_dir>/<name>.npy)

The identity is the clip name without a trailing `_<digits>` segment index (`WRA_AdamSchiff_000`
-> `WRA_AdamSchiff`). HDTF has no emotion labels: records are 'neutral', level 0. Expression codes
are float32 `[T, 50]` (one row per source frame or per 25 fps frame). Processing, skipping of bad
clips and the identity split are as in the MEAD builder.
"""

from __future__ import annotations

import glob
import os
import re

from emodiff_jax.input import clip_builder

_SEGMENT = re.compile(r"_\d+$")


class Builder(clip_builder.VideoClipBuilder):
  """HDTF clips (no emotion labels)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download and trim the HDTF videos (https://github.com/MRzzm/HDTF) and pass the folder of "
      "<name>.mp4 clips (with audio tracks) as --source_dir.")

  def list_sources(self, root: str) -> list[clip_builder.ClipSource]:
    sources = []
    for video in sorted(glob.glob(os.path.join(root, "*.mp4"))):
      name = os.path.splitext(os.path.basename(video))[0]
      sources.append(clip_builder.ClipSource(
          video=video, clip_id=f"hdtf/{name}", identity=f"hdtf/{_SEGMENT.sub('', name)}",
          dataset="hdtf", source="hdtf", expression=clip_builder.find_expression_file(video, root)))
    return sources
