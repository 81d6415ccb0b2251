"""Result tables shaped like the papers': one row per method, one column per split, then mean."""
from __future__ import annotations


def results_table(rows: dict[str, dict[str, float]], *, metric: str) -> str:
    """Markdown table; rows: method -> {split: score in [0, 1]}; scores printed in percent."""
    splits = list(dict.fromkeys(s for scores in rows.values() for s in scores if s != "mean"))
    head = f"| method ({metric}, %) | " + " | ".join(splits + ["mean"]) + " |"
    rule = "|---" * (len(splits) + 2) + "|"
    lines = [head, rule]
    for name, scores in rows.items():
        cells = [f"{100 * scores[s]:.2f}" if s in scores else "" for s in splits]
        mean = sum(scores[s] for s in splits if s in scores) / max(1, sum(s in scores for s in splits))
        lines.append(f"| {name} | " + " | ".join(cells + [f"{100 * mean:.2f}"]) + " |")
    return "\n".join(lines) + "\n"
