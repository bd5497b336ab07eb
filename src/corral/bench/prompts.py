"""The built-in prompt set: varied single-turn requests from about 20 to 300 tokens, fixed order."""

from __future__ import annotations

import json
from pathlib import Path

_QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain how a rainbow forms.",
    "List five fruits that are high in vitamin C.",
    "Why do cats purr?",
    "Give me three tips for learning a new language.",
    "What is the difference between weather and climate?",
    "Describe the water cycle for a ten-year-old.",
]

_NOTES = [
    "The meeting started at nine with a review of last quarter's sales figures.",
    "Revenue grew by twelve percent, driven mostly by the new subscription plan.",
    "Customer churn fell slightly, although support tickets rose during the migration.",
    "The engineering team shipped the mobile redesign two weeks behind schedule.",
    "Marketing proposed a spring campaign focused on small businesses in Europe.",
    "Finance warned that cloud costs were growing faster than revenue.",
    "A hiring freeze was discussed but no decision was made.",
    "The support team asked for better tooling to triage incoming requests.",
    "Legal reviewed the new privacy policy and suggested minor wording changes.",
    "The CEO closed by thanking everyone for a strong quarter and a smooth launch.",
    "Several people raised concerns about meeting fatigue and asked for async updates.",
    "The data team presented a dashboard tracking weekly active users by region.",
]


_TASKS = [
    "Summarize these meeting notes in three bullet points.",
    "List the action items in the notes below.",
    "Write a short email to the team based on these notes.",
    "What are the main risks mentioned in these notes?",
    "Turn these notes into a one-paragraph status report.",
    "Which department had the best quarter, judging by these notes?",
    "Draft three questions for the next meeting from these notes.",
    "Rewrite these notes for a non-technical audience.",
]


def _notes_prompt(i: int, n: int) -> str:
    # Each prompt starts differently and rotates the notes, so prompts share no long prefix:
    # a server's prompt cache should not decide the benchmark.
    body = " ".join(_NOTES[(i * 5 + k) % len(_NOTES)] for k in range(n))
    return f"{_TASKS[i % len(_TASKS)]}\n\n{body}"


def builtin_prompts() -> list[str]:
    """24 prompts: short questions interleaved with note tasks of growing length (~20-300 tokens)."""
    prompts = []
    for i, question in enumerate(_QUESTIONS):
        prompts.append(question)
        prompts.append(_notes_prompt(i, 2 + 2 * i))
        prompts.append(f"{question} Answer in detail, then summarize your answer in one sentence.")
    return prompts


def load_prompts(path: Path | None) -> list[str]:
    """A JSONL file of {"prompt": ...} objects (or bare strings), else the built-in set."""
    if path is None:
        return builtin_prompts()
    prompts = []
    for line in path.read_text().splitlines():
        if line.strip():
            obj = json.loads(line)
            prompts.append(obj if isinstance(obj, str) else obj["prompt"])
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts
