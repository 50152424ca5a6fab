"""MEAD (Wang et al., ECCV 2020) as 25 fps face-crop clips with 16 kHz audio, in ArrayRecord.

Source layout (the TFDS manual dir, `--source_dir`), as distributed by MEAD:

    <source_dir>/<id>/video/front/<emotion>/level_<n>/<nnn>.mp4
    <source_dir>/<id>/audio/<emotion>/level_<n>/<nnn>.m4a
    <source_dir>/expressions/<id>/video/front/<emotion>/level_<n>/<nnn>.npy   (optional)

Only frontal views are used. Expression codes (optional, float32 `[T, 50]` DECA/EMOCA output, one
row per source video frame or per 25 fps frame) live under `expressions/` mirroring the video path,
or beside the video as `<nnn>.npy`. Video is resampled to 25 fps, audio to 16 kHz; one stable Haar
face box per clip is expanded, squared, cropped and resized to the config's resolution. Clips whose
video is unreadable, whose audio is missing or shorter than the video, or with no detected face are
skipped and counted (`builder.skip_stats`). Splits hold out whole identities.
"""

from __future__ import annotations

import glob
import os
import re

from emodiff_jax.input import clip_builder
from emodiff_jax.input import records

_LEVEL = re.compile(r"^level_(\d+)$")


class Builder(clip_builder.VideoClipBuilder):
  """MEAD frontal clips (8 emotions x 3 levels)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download MEAD (https://wywu.github.io/projects/MEAD/MEAD.html), extract each identity's "
      "video.tar and audio.tar, and pass the folder holding <id>/video/front/<emotion>/level_<n>/"
      "<nnn>.mp4 and <id>/audio/<emotion>/level_<n>/<nnn>.m4a as --source_dir.")

  def list_sources(self, root: str) -> list[clip_builder.ClipSource]:
    sources = []
    pattern = os.path.join(root, "*", "video", "front", "*", "level_*", "*.mp4")
    for video in sorted(glob.glob(pattern)):
      rel = os.path.relpath(video, root).split(os.sep)
      ident, emotion, level_dir, name = rel[0], rel[3], rel[4], os.path.splitext(rel[5])[0]
      level = _LEVEL.match(level_dir)
      if emotion not in records.EMOTIONS or not level:
        continue
      sources.append(clip_builder.ClipSource(
          video=video, clip_id=f"mead/{ident}/{emotion}/{level_dir}/{name}",
          identity=f"mead/{ident}", dataset="mead", source="mead", emotion=emotion,
          level=int(level.group(1)),
          audio=os.path.join(root, ident, "audio", emotion, level_dir, name + ".m4a"),
          expression=clip_builder.find_expression_file(video, root)))
    return sources
