"""Writes the example inference inputs next to this file:

* `portrait.png`: the neutral face of a held-out synthetic identity (mead_like 8, test split), rendered
  at 176 px with its background and centred on a 256x256 plain margin, so the CLI exercises face
  detection and cropping (OpenCV Haar finds this face; its 1.5x crop is the 176 px render).
* `speech.wav`: 8 s of the synthetic world's speech-like audio, 16 kHz mono 16-bit PCM.
* `speech_espeak.m4a` (only when `espeak-ng` is installed): a real English sentence, 16 kHz mono AAC
  (AAC, not WAV, to keep the committed files under 300 KB).

    python -m data.examples.make_examples
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave

import numpy as np
from PIL import Image

from emodiff_jax.input import media
from emodiff_jax.input.portrait import load_portrait
from emodiff_jax.synth.audio import speech_like_audio
from emodiff_jax.synth.expression import EXPRESSION_DIM
from emodiff_jax.synth.identity import make_identity
from emodiff_jax.synth.render import render_frames

HERE = os.path.dirname(os.path.abspath(__file__))
IDENTITY = ("mead_like", 8)
CANVAS, FACE = 256, 176
SPEECH_SECONDS = 8.0
SEED = 2409
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it takes a long nap in the warm sun."


def portrait() -> np.ndarray:
  """uint8 `[CANVAS, CANVAS, 3]`: the identity's neutral face on a plain margin of its background colour."""
  identity = make_identity(*IDENTITY)
  face = render_frames(identity, np.zeros((1, EXPRESSION_DIM), np.float32), FACE)[0]
  margin = np.round(np.asarray(identity.background) * 0.85 * 255).astype(np.uint8)  # the pattern's mean
  image = np.broadcast_to(margin, (CANVAS, CANVAS, 3)).copy()
  at = (CANVAS - FACE) // 2
  image[at:at + FACE, at:at + FACE] = face
  return image


def write_wav(path: str, wav: np.ndarray, sample_rate: int) -> None:
  """Mono 16-bit PCM WAV."""
  with wave.open(path, "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(sample_rate)
    f.writeframes((np.clip(wav, -1.0, 1.0) * 32767).round().astype("<i2").tobytes())


def espeak_speech(path: str) -> None:
  """`SENTENCE` spoken by espeak-ng, resampled to 16 kHz and encoded as AAC in `path` (.m4a)."""
  with tempfile.TemporaryDirectory() as tmp:
    raw = os.path.join(tmp, "espeak.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", raw, SENTENCE], check=True)
    wav = media.load_audio(raw, media.SAMPLE_RATE)
  subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "f32le", "-ar", str(media.SAMPLE_RATE), "-ac", "1",
                  "-i", "pipe:0", "-c:a", "aac", "-b:a", "24k", "-map_metadata", "-1", "-fflags", "+bitexact",
                  path], input=wav.astype(np.float32).tobytes(), check=True)


def main() -> None:
  path = os.path.join(HERE, "portrait.png")
  Image.fromarray(portrait()).save(path, optimize=True)
  print(f"{path}: Haar face crop box {load_portrait(path, 64).box}")
  speech, _ = speech_like_audio(np.random.default_rng(SEED), round(SPEECH_SECONDS * media.TARGET_FPS))
  write_wav(os.path.join(HERE, "speech.wav"), speech, media.SAMPLE_RATE)
  if shutil.which("espeak-ng"):
    espeak_speech(os.path.join(HERE, "speech_espeak.m4a"))
  for name in sorted(os.listdir(HERE)):
    if not name.endswith(".py") and os.path.isfile(os.path.join(HERE, name)):
      print(f"{name}: {os.path.getsize(os.path.join(HERE, name)) / 1024:.1f} KiB")


if __name__ == "__main__":
  main()
