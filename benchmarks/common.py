"""Timing and table helpers shared by the benchmark scripts."""

from __future__ import annotations

from typing import Sequence



def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
  """Prints (and returns) a markdown table."""
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  text = "\n".join(lines)
  print(text, flush=True)
  return text
