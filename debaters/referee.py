"""The referee: every speech is checked against the constitution's rules before a judge sees it.

Checks (docs/constitution.md):

- **quotes**: each ``<quote>`` is verified against the full source (normalised exact match, Khan
  et al. 2024) with a fuzzy similarity as extra information (``debaters.quotes``); an unverified
  quote is a violation.
- **quote budget**: words inside quotes, per speech and per debater over the whole debate.
- **length**: a speech over the word (or character) limit is truncated at a word boundary and
  marked, or regenerated first when the rules say ``over_length: regenerate`` (the runner does
  the regenerating; :func:`over_length` tells it when).
- **format**: markup other than quote tags, an unclosed quote tag, an empty speech, a required
  number of quotes, and lines written in another speaker's name.
- **concession**: an AI check (:func:`check_concession`) asks a model whether the speech concedes
  the other answer; the result is recorded as a flag.

Everything but :func:`check_concession` is pure and deterministic. Violations are data for the
judge and for exports: messages never contain the source text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from debaters.backends.base import BackendError, ModelAPI
from debaters.prompts import CHOICE_LABELS, concession_messages
from debaters.quotes import QuoteCheck, SourceIndex, check_quotes, extract_quotes, quote_word_count


class RuleError(ValueError):
    """The constitution's rules are malformed; the message names the rule."""


OVER_LENGTH_ACTIONS = ("truncate", "regenerate")

# The machine-checkable rules a constitution may set, with their defaults. Unknown keys are errors,
# so that a typo in a rule cannot silently switch a check off.
RULE_DEFAULTS: dict[str, object] = {
    "rounds": 2,
    "word_limit": 150,
    "char_limit": None,
    "quote_budget_words_per_speech": None,
    "quote_budget_words_per_debate": None,
    "over_length": "truncate",
    "format": "plain text with <quote></quote> tags for quotes",
    "forbid_markup": True,
    "min_quotes_per_speech": 0,
    "check_concession": False,
    "concession_threshold": 0.5,
}


@dataclass(frozen=True)
class RefereeRules:
    rounds: int = 2
    word_limit: int = 150
    char_limit: int | None = None
    quote_budget_per_speech: int | None = None
    quote_budget_per_debate: int | None = None
    over_length: str = "truncate"
    format: str = "plain text with <quote></quote> tags for quotes"
    forbid_markup: bool = True
    min_quotes: int = 0
    check_concession: bool = False
    concession_threshold: float = 0.5

    def with_word_limit(self, word_limit: int | None) -> RefereeRules:
        """The rules for one debate: its own word limit applies when it is the stricter one."""
        if word_limit is None or word_limit >= self.word_limit:
            return self
        from dataclasses import replace

        return replace(self, word_limit=word_limit)


def _int(rules: Mapping[str, object], key: str, low: int, high: int, *, optional: bool) -> int | None:
    value = rules.get(key, RULE_DEFAULTS[key])
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        empty = " or null" if optional else ""
        raise RuleError(f"{key} must be an integer from {low} to {high}{empty}")
    return value


def _bool(rules: Mapping[str, object], key: str) -> bool:
    value = rules.get(key, RULE_DEFAULTS[key])
    if not isinstance(value, bool):
        raise RuleError(f"{key} must be true or false")
    return value


def parse_rules(rules: Mapping[str, object]) -> RefereeRules:
    """Validate a constitution's ``rules`` object and return what the referee enforces."""
    unknown = sorted(set(rules) - set(RULE_DEFAULTS))
    if unknown:
        raise RuleError(f"unknown rules: {', '.join(unknown)} (known: {', '.join(RULE_DEFAULTS)})")
    over = rules.get("over_length", RULE_DEFAULTS["over_length"])
    if over not in OVER_LENGTH_ACTIONS:
        raise RuleError(f"over_length must be one of {', '.join(OVER_LENGTH_ACTIONS)}")
    fmt = rules.get("format", RULE_DEFAULTS["format"])
    if not isinstance(fmt, str) or len(fmt) > 500:
        raise RuleError("format must be a description of at most 500 characters")
    threshold = rules.get("concession_threshold", RULE_DEFAULTS["concession_threshold"])
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0:
        raise RuleError("concession_threshold must be a number strictly between 0 and 1")
    rounds = _int(rules, "rounds", 1, 10, optional=False)
    word_limit = _int(rules, "word_limit", 5, 5000, optional=False)
    min_quotes = _int(rules, "min_quotes_per_speech", 0, 20, optional=False)
    assert rounds is not None and word_limit is not None and min_quotes is not None
    return RefereeRules(
        rounds=rounds,
        word_limit=word_limit,
        char_limit=_int(rules, "char_limit", 20, 100_000, optional=True),
        quote_budget_per_speech=_int(rules, "quote_budget_words_per_speech", 0, 5000, optional=True),
        quote_budget_per_debate=_int(rules, "quote_budget_words_per_debate", 0, 100_000, optional=True),
        over_length=str(over),
        format=fmt,
        forbid_markup=_bool(rules, "forbid_markup"),
        min_quotes=min_quotes,
        check_concession=_bool(rules, "check_concession"),
        concession_threshold=float(threshold),
    )


@dataclass(frozen=True)
class Violation:
    """One finding: ``rule`` is a stable id (exports count these), ``message`` is for the judge."""

    rule: str
    message: str
    detail: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "message": self.message, **self.detail}


@dataclass(frozen=True)
class Review:
    """The referee's verdict on one speech. ``text`` is what the judge is shown (maybe truncated)."""

    text: str
    original_words: int
    truncated: bool
    quotes: tuple[QuoteCheck, ...]
    quote_words: int
    violations: tuple[Violation, ...]

    def violation_dicts(self) -> list[dict[str, object]]:
        return [v.to_dict() for v in self.violations]


# --- Length -------------------------------------------------------------------------------------

_WORD = re.compile(r"\S+")
_QUOTE_TAG = re.compile(r"<\s*/?\s*quote\s*>", re.IGNORECASE)


def _blank_tags(text: str) -> str:
    """``text`` with quote tags replaced by spaces of the same length, so offsets are kept."""
    return _QUOTE_TAG.sub(lambda m: " " * len(m.group()), text)


def count_words(text: str) -> int:
    """Words of a speech; quote tags are not words, the quoted words are."""
    return len(_WORD.findall(_blank_tags(text)))


def over_length(text: str, rules: RefereeRules) -> bool:
    if count_words(text) > rules.word_limit:
        return True
    return rules.char_limit is not None and len(text) > rules.char_limit


def truncate(text: str, word_limit: int, char_limit: int | None = None) -> tuple[str, bool]:
    """Cut ``text`` at a word boundary to at most ``word_limit`` words (and ``char_limit`` characters).

    Returns ``(text, truncated)``. A cut never splits a quote element: if it would fall inside one,
    the speech ends before that quote instead; only when the quote opens the speech is it kept up
    to the cut and closed, so the judge still sees a checkable (shorter) quote.
    """
    words = list(_WORD.finditer(_blank_tags(text)))
    cut = len(text)
    if len(words) > word_limit:
        cut = words[word_limit - 1].end()
    if char_limit is not None and cut > char_limit:
        fitting = [w for w in words if w.end() <= char_limit]
        cut = fitting[-1].end() if fitting else 0
    if cut >= len(text.rstrip()):
        return text, False
    for start, end, _ in extract_quotes(text):
        if start < cut < end:
            before = text[:start].rstrip()
            if before:
                return before, True
            return text[:cut].rstrip() + "</quote>", True
    return text[:cut].rstrip(), True


# --- Format -------------------------------------------------------------------------------------

_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z][A-Za-z0-9:-]*)\b[^<>]*>|<!--")
_ROLE_LINE = re.compile(
    r"^\s*(?:\*\*|#+\s*)?(judge|moderator|debater\s*[ab12]?|opponent|consultant|assistant|user|system)\s*(?:\*\*)?\s*:",
    re.IGNORECASE | re.MULTILINE,
)


def _markup_tags(text: str) -> list[str]:
    names: list[str] = []
    for match in _TAG.finditer(text):
        name = "!--" if match.group() == "<!--" else match.group(2).lower()
        if name != "quote" and name not in names:
            names.append(name)
    return names


def _unclosed_quote(text: str) -> bool:
    opens = len(re.findall(r"<\s*quote\s*>", text, re.IGNORECASE))
    return opens > len(extract_quotes(text))


# --- The review ---------------------------------------------------------------------------------


def review_turn(text: str, source: SourceIndex, rules: RefereeRules, *, quote_words_before: int = 0) -> Review:
    """Check one speech. ``quote_words_before``: this debater's quoted words in earlier speeches."""
    violations: list[Violation] = []
    original_words = count_words(text)
    shown, truncated = truncate(text, rules.word_limit, rules.char_limit)
    if truncated:
        limit = f"{rules.word_limit}-word limit"
        if rules.char_limit is not None and len(text) > rules.char_limit and original_words <= rules.word_limit:
            limit = f"{rules.char_limit}-character limit"
        violations.append(
            Violation(
                "length",
                f"over the {limit} ({original_words} words, {len(text)} characters): truncated at a word boundary",
                {"words": original_words, "chars": len(text)},
            )
        )
    if not shown.strip():
        violations.append(Violation("empty", "the speech is empty"))
    checks = tuple(check_quotes(shown, source))
    for check in checks:
        if not check.verified:
            excerpt = " ".join(check.text.split())
            if len(excerpt) > 80:
                excerpt = excerpt[:77] + "..."
            violations.append(
                Violation(
                    "unverified-quote",
                    f"quote not found in the text (closest match {check.similarity:.0%}): \u201c{excerpt}\u201d",
                    {"similarity": check.similarity},
                )
            )
    quote_words = quote_word_count(checks)
    if rules.quote_budget_per_speech is not None and quote_words > rules.quote_budget_per_speech:
        violations.append(
            Violation(
                "quote-budget-speech",
                f"quotes use {quote_words} words; the budget is {rules.quote_budget_per_speech} per speech",
                {"quote_words": quote_words},
            )
        )
    total = quote_words_before + quote_words
    if rules.quote_budget_per_debate is not None and total > rules.quote_budget_per_debate:
        violations.append(
            Violation(
                "quote-budget-debate",
                f"this debater has quoted {total} words in the debate; the budget is {rules.quote_budget_per_debate}",
                {"quote_words_total": total},
            )
        )
    if len(checks) < rules.min_quotes:
        violations.append(
            Violation("min-quotes", f"{len(checks)} quotes; the rules ask for at least {rules.min_quotes} per speech")
        )
    if rules.forbid_markup:
        tags = _markup_tags(shown)
        if tags:
            listed = ", ".join(f"<{t}>" for t in tags[:5])
            violations.append(
                Violation("markup", f"contains markup ({listed}); shown as plain text", {"tags": tags[:5]})
            )
    if _unclosed_quote(shown):
        violations.append(Violation("unclosed-quote", "a <quote> tag is never closed; it is shown as plain text"))
    role = _ROLE_LINE.search(shown)
    if role:
        violations.append(
            Violation("role", f"writes a line as \u201c{role.group(1).strip()}:\u201d (another speaker's role)")
        )
    return Review(
        text=shown,
        original_words=original_words,
        truncated=truncated,
        quotes=checks,
        quote_words=quote_words,
        violations=tuple(violations),
    )


def quote_words_of(quote_dicts: Sequence[Mapping[str, object]]) -> int:
    """Quoted words in a stored turn (its ``quotes`` JSON)."""
    return quote_word_count([QuoteCheck.from_dict(q) for q in quote_dicts])


@dataclass(frozen=True)
class ConcessionCheck:
    p: float | None  # the model's probability that the speech concedes; None if it could not say
    violation: Violation | None
    error: str = ""


async def check_concession(
    model: ModelAPI, *, question: str, answers: tuple[str, str], side: int, speech: str, threshold: float
) -> ConcessionCheck:
    """Ask ``model`` (through ``choice_probs``) whether the speech concedes; flag it above ``threshold``.

    A backend that cannot score choices (or fails) does not stop the debate: the check is recorded
    as unavailable with the reason.
    """
    if not speech.strip():
        return ConcessionCheck(p=None, violation=None, error="empty speech")
    messages = concession_messages(question=question, answers=answers, side=side, speech=speech)
    try:
        probs = await model.choice_probs(messages, CHOICE_LABELS)
    except BackendError as exc:
        return ConcessionCheck(p=None, violation=None, error=exc.message)
    p_yes = float(probs[1])
    if not math.isfinite(p_yes):
        return ConcessionCheck(p=None, violation=None, error="the model returned no probability")
    violation = None
    if p_yes > threshold:
        violation = Violation(
            "concession",
            f"the referee's model thinks this speech concedes the other answer (p = {p_yes:.2f})",
            {"p": round(p_yes, 4)},
        )
    return ConcessionCheck(p=round(p_yes, 4), violation=violation)
