"""What reaches a judge's browser: the answers as that judge sees them (A and B, in the order drawn
for them), never the question's stored order.

A question's stored order is the researchers' (``side`` 0 and 1 everywhere in the record). A
judge who saw ``side`` or a ``side-0`` class could tell which answer is stored first, and in data
sets whose gold answer sits mostly in one position that leaks the answer. So every message and
page a judge gets is relabelled per judge: a speech carries ``answer`` (the letter this judge sees)
instead of ``side``, and ``turn`` is its place in this judge's transcript rather than its stored
index (the stored index would tell the side too: the two openings of a debate are turns 0 and 1,
sides 0 and 1). The speeches of a simultaneous step, which no speaker saw, are shown A first;
everything else in the order it was given. Quote similarity scores (how close an invented quote
came to the hidden story) and the reason a speech is being generated again (a backend's error
text) are left out too.

What this cannot hide: in a protocol whose later rounds are sequential, the debater of the stored
first answer speaks first (``arena.engine.protocol``); a judge who knows that can tell the order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from arena.engine.protocol import Protocol, ProtocolError, make_protocol
from arena.models import Debate
from judging.models import Assignment

LETTERS = ("A", "B")
RESET_NOTICE = "This speech is being generated again from the start."
_SPEECH_EVENTS = ("turn_start", "turn_end", "delta", "turn_reset")


def display_ranks(protocol: Protocol, shown_first: int) -> dict[int, int]:
    """Turn index → its place in this judge's transcript. Within one step (speeches given at the
    same time, none seeing the other) the judge's answer A comes first; steps stay in order."""
    try:
        steps = protocol.steps()
    except ProtocolError:
        return {}
    ranks: dict[int, int] = {}
    for step in steps:
        for slot in sorted(step, key=lambda s: (s.side != shown_first, s.index)):
            ranks[slot.index] = len(ranks)
    return ranks


def _without_similarity(segment: object) -> object:
    if isinstance(segment, Mapping):
        return {k: v for k, v in segment.items() if k != "similarity"}
    return segment


@dataclass(frozen=True)
class JudgeView:
    """One judge's view of one debate: how stored sides become letters and transcript places."""

    shown_first: int
    ranks: Mapping[int, int] = field(default_factory=dict)

    def letter(self, side: object) -> str:
        return LETTERS[0] if side == self.shown_first else LETTERS[1]

    def place(self, turn: int) -> int:
        """A stored turn index as this judge's transcript position."""
        return self.ranks.get(turn, turn)

    def turn(self, payload: Mapping[str, object]) -> dict[str, object]:
        """A speech (committed, starting, in flight, a delta of one) as this judge gets it."""
        out = {k: v for k, v in payload.items() if k != "side"}
        if "side" in payload:
            out["answer"] = self.letter(payload["side"])
        turn = payload.get("turn")
        if isinstance(turn, int):
            out["turn"] = self.place(turn)
        segments = payload.get("segments")
        if isinstance(segments, list):
            out["segments"] = [_without_similarity(seg) for seg in segments]
        return out

    def event(self, event: Mapping[str, object]) -> dict[str, object]:
        """A live event of the debate's group as this judge gets it."""
        kind = event.get("type")
        if kind == "turn_reset":
            return {**self.turn(event), "reason": RESET_NOTICE}
        if kind in _SPEECH_EVENTS:
            return self.turn(event)
        if kind == "status":
            return {"type": "status", "status": event.get("status"), "detail": ""}
        return dict(event)

    def snapshot(self, snapshot: Mapping[str, object]) -> dict[str, object]:
        out = dict(snapshot)
        for key in ("turns", "inflight"):
            items = snapshot.get(key)
            if isinstance(items, list):
                mine = [self.turn(item) for item in items]
                out[key] = sorted(mine, key=lambda t: t["turn"] if isinstance(t.get("turn"), int) else 0)
        return out


def judge_view(debate: Debate, shown_first: int) -> JudgeView:
    try:
        protocol = make_protocol(debate.protocol, debate.settings, seed=debate.seed, first_side=debate.first_side)
    except ProtocolError:
        return JudgeView(shown_first)
    return JudgeView(shown_first, display_ranks(protocol, shown_first))


def judge_view_for(user_id: int, debate_id: int) -> JudgeView | None:
    """The view of the judge assigned to this debate, or None if they are not assigned to it."""
    assignment = Assignment.objects.filter(debate_id=debate_id, judge_id=user_id).select_related("debate").first()
    if assignment is None:
        return None
    return judge_view(assignment.debate, assignment.shown_first)
