"""Anti-aliased 2D rendering of a synthetic face driven by expression coefficients.

Each part is a signed-distance shape (ellipses, capsules, curved mouth) composited with analytic
coverage `clip(0.5 - d / pixel, 0, 1)`, so edges are anti-aliased at any resolution. Every named
coefficient of `expression.COEFFICIENTS` moves something visible, monotonically. Vectorised over frames.

Emotion cues are drawn large enough to survive an 8x downsampling (the tiny model's 64 -> 8x8 latents):
thick brows that move by up to ~5 px, mouth corners that curve by ~5 px, nose wrinkles and blush patches
a few pixels wide, and a camera zoomed in by `ZOOM`. In a first drawing they moved by 1-3 px and a trained
VAE kept too little of angry, contempt and sad for any diffusion model to learn them.
"""

from __future__ import annotations

import numpy as np

from emodiff_jax.synth.expression import INDEX
from emodiff_jax.synth.identity import Identity

ZOOM = 1.15  # camera zoom: the face fills more of the frame, so its features span more latent cells


def _cov(d: np.ndarray, px: float) -> np.ndarray:
  """Coverage of a shape with signed distance `d` (negative inside) for pixels of size `px`."""
  return np.clip(0.5 - d / px, 0.0, 1.0)


def _ellipse(x, y, cx, cy, rx, ry) -> np.ndarray:
  """Approximate signed distance to an ellipse: the implicit value over its gradient norm, so thin
  (closed-eye) ellipses keep sharp edges instead of smearing along their long axis."""
  k0 = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
  k1 = np.sqrt(((x - cx) / rx**2) ** 2 + ((y - cy) / ry**2) ** 2)
  return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _capsule(x, y, ax, ay, bx, by, r) -> np.ndarray:
  """Signed distance to the segment a-b thickened by r."""
  pax, pay, bax, bay = x - ax, y - ay, bx - ax, by - ay
  h = np.clip((pax * bax + pay * bay) / (bax**2 + bay**2 + 1e-9), 0.0, 1.0)
  return np.sqrt((pax - bax * h) ** 2 + (pay - bay * h) ** 2) - r


def _paint(img: np.ndarray, alpha: np.ndarray, color) -> None:
  a = alpha[..., None]
  img *= 1.0 - a
  img += a * np.asarray(color, np.float32)


def render_frames(identity: Identity, expressions: np.ndarray, resolution: int = 64) -> np.ndarray:
  """Renders `expressions [T, D]` on `identity`: uint8 frames `[T, H, W, 3]`, H = W = resolution."""
  e = {name: np.asarray(expressions[:, i], np.float32)[:, None, None] for name, i in INDEX.items()}
  t = expressions.shape[0]
  px = 2.0 / (resolution * ZOOM)
  g = ((np.arange(resolution, dtype=np.float32) + 0.5) * 2.0 / resolution - 1.0) / ZOOM
  y0, x0 = np.meshgrid(g, g, indexing="ij")
  idn = identity

  # Background pattern (static camera).
  a = idn.pattern_angle
  u = x0 * np.cos(a) + y0 * np.sin(a)
  if idn.pattern == "stripes":
    pat = 0.5 + 0.5 * np.sin(idn.pattern_freq * np.pi * u)
  elif idn.pattern == "checker":
    v = -x0 * np.sin(a) + y0 * np.cos(a)
    pat = 0.5 + 0.5 * np.tanh(3 * np.sin(idn.pattern_freq * u) * np.sin(idn.pattern_freq * v))
  else:
    pat = (u + 1.5) / 3.0
  img = np.broadcast_to((np.asarray(idn.background, np.float32) * (0.7 + 0.3 * pat[..., None]))[None],
                        (t, resolution, resolution, 3)).copy()

  # Head pose: roll rotates about the neck, yaw/pitch shift the face and (more) its features.
  roll = 0.25 * e["head_roll"]
  cr, sr = np.cos(roll), np.sin(roll)
  x = cr * x0 + sr * (y0 - 0.6)
  y = -sr * x0 + cr * (y0 - 0.6) + 0.6
  hx, hy = 0.06 * e["head_yaw"], 0.05 * e["head_pitch"]
  fx, fy = 0.16 * e["head_yaw"], 0.12 * e["head_pitch"]
  jaw = e["jaw_open"]

  fw, fh = idn.face_width, idn.face_height
  cy = 0.05 + hy
  _paint(img, _cov(_ellipse(x, y, hx, cy - 0.05, fw + idn.hair_volume, fh * 0.9 + idn.hair_volume), px)
         * (y < cy + 0.1), idn.hair)
  ry = np.where(y > cy, fh * (1.0 + 0.15 * idn.chin) + 0.1 * jaw, fh)
  face = _cov(_ellipse(x, y, hx, cy, fw, ry), px)
  _paint(img, face, idn.skin)
  fringe = face * _cov(y - (cy - 0.75 * fh + 0.03 * np.sin(9 * x)), px)
  _paint(img, fringe, idn.hair)

  skin = np.asarray(idn.skin, np.float32)
  es, ez = idn.eye_spacing, idn.eye_size
  for side in (-1.0, 1.0):
    ex, ey = side * es + fx, -0.06 + fy
    # Cheeks.
    # Contempt's unilateral dimpler and the nose wrinkler also bunch the cheek (one side / both).
    bunch = e["cheek_raise"] + 0.4 * e["nose_wrinkle"] + (0.8 * e["mouth_asym"] if side > 0 else 0.0)
    _paint(img, 0.9 * np.clip(bunch, 0, 1) * _cov(_ellipse(x, y, ex, ey + 0.17, 0.11, 0.075), px),
           (0.9, 0.35, 0.4))
    # Eyes: lid opening grows with upper_lid_raise, shrinks with eye_close and cheek_raise.
    eh = ez * np.clip(1.0 + 0.8 * e["upper_lid_raise"] - 0.95 * e["eye_close"] - 0.5 * bunch, 0.05, 2.5)
    sclera = _cov(_ellipse(x, y, ex, ey, 1.5 * ez, eh), px)
    _paint(img, sclera, (0.97, 0.97, 0.97))
    _paint(img, sclera * _cov(_ellipse(x, y, ex, ey, 0.6 * ez, 0.6 * ez), px), (0.1, 0.07, 0.05))
    # Brows: inner end raises with brow_inner_raise, outer with brow_outer_raise; brow_lower pulls down.
    inner_x, outer_x = ex - side * 1.3 * ez, ex + side * 1.8 * ez
    base = ey - 2.4 * ez - 0.03
    inner_y = base - 0.15 * e["brow_inner_raise"] + 0.12 * e["brow_lower"] - 0.03 * e["upper_lid_raise"]
    outer_y = base - 0.13 * e["brow_outer_raise"] + 0.02 * e["brow_lower"] - 0.03 * e["upper_lid_raise"]
    inner_x = inner_x + side * 0.04 * e["brow_lower"]
    _paint(img, _cov(_capsule(x, y, inner_x, inner_y, outer_x, outer_y, 0.04), px),
           0.8 * np.asarray(idn.hair, np.float32))

  # Nose and its wrinkles.
  _paint(img, _cov(_capsule(x, y, fx, -0.02 + fy, fx, 0.16 + fy, 0.02), px), 0.82 * skin)
  wrinkle = np.clip(e["nose_wrinkle"], 0, 1.5)
  for dy in (-0.01, 0.035, 0.08):
    _paint(img, np.clip(wrinkle, 0, 1) * _cov(_capsule(x, y, fx - 0.065, 0.01 + dy + fy, fx + 0.065,
                                                       0.01 + dy + fy, 0.018), px), 0.35 * skin)

  # Mouth: width from stretch/pull/pucker, corner curve from pull/depress/asymmetry, opening from jaw.
  mx, my = fx, 0.33 + 0.05 * jaw + fy
  mw = idn.mouth_width * np.clip(1 + 0.45 * e["lip_stretch"] + 0.4 * e["lip_corner_pull"] - 0.45 * e["pucker"]
                                 - 0.3 * e["lip_press"], 0.3, 2.0)
  uu = np.clip((x - mx) / mw, -1.0, 1.0)
  curve = my - 0.15 * (e["lip_corner_pull"] - e["lip_corner_depress"]) * uu**2 - 0.2 * e["mouth_asym"] * uu
  shape = np.sqrt(1.0 - uu**2)
  press = np.clip(1.0 - 0.8 * e["lip_press"], 0.1, 1.0)
  # A smile parts the lips (a grin): lip_corner_pull opens the mouth a little without the jaw.
  open_down = (0.008 + 0.12 * np.clip(jaw, 0, 2) + 0.05 * np.clip(e["lip_corner_pull"], 0, 2)) * shape * press
  open_up = (0.006 + 0.03 * np.clip(jaw, 0, 2) + 0.06 * np.clip(e["upper_lip_raise"], 0, 2)) * shape * press
  lip = 0.028 * (1 + 0.6 * np.clip(e["pucker"], 0, 2)) * press
  outer = np.maximum(np.abs(x - mx) - mw - 0.01, np.maximum(curve - open_up - lip - y, y - curve - open_down - lip))
  _paint(img, _cov(outer, px), skin * np.array([0.85, 0.45, 0.45], np.float32))
  inner = np.maximum(np.abs(x - mx) - mw, np.maximum(curve - open_up - y, y - curve - open_down))
  _paint(img, _cov(inner, px), (0.22, 0.04, 0.07))
  return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
