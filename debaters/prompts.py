"""Debater prompts built from the constitution and the protocol. Pure: no Django, no I/O.

The exact messages of every turn are stored with the turn (and hashed), so a debate can be
reproduced and audited.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from debaters.backends.base import ChatMessage


@dataclass(frozen=True)
class SpeechRecord:
    side: int
    round: int
    text: str


@dataclass(frozen=True)
class DebaterView:
    """Everything one debater may see when it speaks, as decided by the protocol."""

    question: str
    answers: tuple[str, str]
    side: int
    round: int
    rounds: int
    word_limit: int
    excerpts: str
    transcript: tuple[SpeechRecord, ...]
    source_title: str = ""
    whole_source: bool = False


def debater_messages(preamble: str, principles: str, view: DebaterView) -> list[ChatMessage]:
    mine = view.answers[view.side]
    theirs = view.answers[1 - view.side]
    system = (
        f"{preamble}\n\nYou are a debater. You defend the answer: \"{mine}\". "
        f"Your opponent defends: \"{theirs}\".\n\nPrinciples you must follow:\n{principles}\n\n"
        f"Rules: at most {view.word_limit} words per speech. Quote the text only inside <quote></quote> tags, "
        "copying the words exactly."
    )
    source_label = "The text" if view.whole_source else "Excerpts from the text"
    parts = [
        f"{source_label} ({view.source_title}):\n{view.excerpts}",
        f"Question: {view.question}",
        f"Answer 1: {view.answers[0]}\nAnswer 2: {view.answers[1]}",
        f"You argue for: \"{mine}\".",
    ]
    if view.transcript:
        lines = []
        for speech in view.transcript:
            who = "You" if speech.side == view.side else "Opponent"
            lines.append(f"{who} (round {speech.round}, for \"{view.answers[speech.side]}\"):\n{speech.text}")
        parts.append("Debate so far:\n\n" + "\n\n".join(lines))
    if view.round == 1:
        task = "Give your opening speech."
    else:
        task = f"Give your speech for round {view.round} of {view.rounds}. Rebut your opponent's last points."
    parts.append(
        f"{task} Argue that the answer is \"{mine}\". Use at least one exact quote in <quote></quote> tags. "
        f"At most {view.word_limit} words."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def prompt_hash(messages: Sequence[ChatMessage]) -> str:
    """A stable hash of the exact messages (role and content, in order)."""
    payload = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()
