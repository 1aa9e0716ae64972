"""The scheduler thread: owns the model and runs the continuous-batching loop (see
:mod:`debaters.backends.transformers_backend` for how it works)."""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import threading
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache

from debaters.backends.base import BackendError, ChatMessage, Delta, Final, StreamItem, continues_reply
from debaters.backends.transformers.choices import label_probs, label_tokens
from debaters.backends.transformers.jobs import ChoiceJob, GenJob, Job, Stop, deliver
from debaters.backends.transformers.kv_cache import BufferedLayer, cache_layers, kv_bytes_per_token
from debaters.backends.transformers.loading import (
    DTYPES,
    TransformersOptions,
    default_dtype,
    load_tokenizer,
    resolve_model_path,
)
from debaters.backends.transformers.prefix_cache import PrefixCache, PrefixEntry, common_prefix
from debaters.backends.transformers.stops import REPLACEMENT, find_stop, partial_stop

log = logging.getLogger(__name__)

# A newcomer waits one decoding step for a sibling's prompt to be cached when that saves this many
# more prompt tokens than the cache offers now.
_DEFER_GAIN = 64
# Nucleus sampling first looks at this many top tokens; only rows whose nucleus is wider fall back
# to sorting the whole vocabulary (exact either way, but sorting 49k logits per row is slow on CPU).
_TOP_K_PROBE = 256
# A constrained row (a request's TextConstraint) chooses among its this many likeliest tokens, and
# the tokens that continue its copy source, those that keep the constraint; when none does, it ends.
_CONSTRAINED_PROBE = 64


class _Row:
    """One sequence in the running batch (scheduler thread only)."""

    __slots__ = (
        "completion_tokens",
        "constraint",
        "deferred",
        "emitted",
        "eos_ids",
        "generated",
        "generator",
        "job",
        "max_new",
        "prompt_ids",
        "sampled",
        "stop",
        "temperature",
        "text",
        "top_p",
    )

    def __init__(self, job: GenJob, prompt_ids: list[int], max_new: int, eos_ids: frozenset[int]) -> None:
        params = job.request.params
        self.job = job
        self.prompt_ids = prompt_ids
        self.max_new = max_new
        self.eos_ids = eos_ids
        self.temperature = params.temperature
        self.top_p = params.top_p
        self.stop = tuple(s for s in params.stop if s)
        self.generated: list[int] = []  # completion ids without the end-of-sequence token
        self.sampled: list[int] = []  # every sampled id, end-of-sequence included
        self.deferred = False  # waited once for a sibling's prompt to be cached (never twice)
        self.completion_tokens = 0  # includes the end-of-sequence token when one was produced
        self.emitted = ""  # text already sent as deltas: always a prefix of the final text
        self.text = ""  # the completion decoded so far (what a constraint is checked against)
        self.constraint = job.request.constraint.compile(self.stop) if job.request.constraint is not None else None
        self.generator: torch.Generator | None = None
        if self.temperature > 0:
            seed = params.seed if params.seed is not None else secrets.randbits(63)
            self.generator = torch.Generator(device="cpu")
            self.generator.manual_seed(seed)


class Scheduler:
    """Owns the model and runs the continuous-batching loop in one daemon thread."""

    def __init__(self, model_name: str, options: TransformersOptions) -> None:
        self._model_name = model_name
        self._opts = options
        self._cond = threading.Condition()
        self._inbox: collections.deque[Job | Stop] = collections.deque()
        self._closed = False  # set under _cond when the thread stops taking jobs
        self._ready = threading.Event()
        self._load_error: BackendError | None = None
        # Scheduler-thread state.
        self.model: PreTrainedModel | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.device = torch.device("cpu")
        self.context = 0  # max_position_embeddings: prompt + completion must fit
        self.eos_ids: frozenset[int] = frozenset()
        self.pad_id = 0
        self._waiting: collections.deque[_Row] = collections.deque()
        self._rows: list[_Row] = []
        self._cache: Cache | None = None
        self._mask: torch.Tensor | None = None  # [B, T] long, 1 = real token in the cache
        self._next: torch.Tensor | None = None  # [B] sampled tokens not yet fed to the model
        self._pos: torch.Tensor | None = None  # [B] position id of the next fed token
        self._prefixes = PrefixCache(int(options.prefix_cache_mb * 2**20))
        self._pieces: dict[int, str] = {}  # token id -> its text alone (constrained decoding)
        self._kv_token_bytes = 0  # keys + values of one token over all layers (set by _load)
        # Prompt tokens admitted, how many came from the prefix cache, and where the time went
        # (read by benchmarks and tests).
        self.stats = {
            "prefill_tokens": 0,
            "reused_tokens": 0,
            "prefix_hits": 0,
            "prefills": 0,
            "prefill_ms": 0,
            "decode_steps": 0,
            "decode_ms": 0,
        }
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[Job, StreamItem | list[float] | BackendError]]] = {}
        self._thread = threading.Thread(target=self._run, name=f"transformers-backend:{model_name}", daemon=True)
        self._thread.start()

    # ---- called from other threads ----

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue jobs for the thread; raises a transient :class:`BackendError` once it has ended."""
        with self._cond:
            if self._closed:
                raise BackendError("transformers backend was closed")
            self._inbox.extend(jobs)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._inbox.append(Stop())
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def load_error(self) -> BackendError | None:
        """Why the model could not be loaded (set before :meth:`wait_ready` returns), else None."""
        return self._load_error

    @property
    def is_alive(self) -> bool:
        """True while the thread takes jobs."""
        return self._thread.is_alive() and not self._closed

    # ---- the thread ----

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            # Whatever ended the loop, nobody may be left waiting for an answer.
            self._shutdown()
            self._flush()

    def _serve(self) -> None:
        with torch.inference_mode():
            try:
                self._load()
            except BackendError as exc:
                self._load_error = exc
            except Exception as exc:  # noqa: BLE001 - reported to every request instead
                log.exception("transformers backend failed to load %s", self._model_name)
                self._load_error = BackendError(f"could not load model {self._model_name!r}: {exc}", permanent=True)
            finally:
                self._ready.set()
            stopping = False
            while not stopping:
                try:
                    stopping = self._iteration()
                except Exception as exc:  # noqa: BLE001 - last resort: fail the batch, keep serving
                    log.exception("transformers backend: scheduler iteration failed")
                    self._fail_running(exc)
                self._flush()

    def _load(self) -> None:
        opts = self._opts
        path = resolve_model_path(self._model_name)
        device = opts.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(
                "transformers backend: device 'cuda' requested but CUDA is not available", permanent=True
            )
        dtype_name = opts.dtype if opts.dtype != "auto" else default_dtype(device)
        if opts.num_threads is not None:
            torch.set_num_threads(opts.num_threads)
        started = time.monotonic()
        self.tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype_name])
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        config = self.model.config
        self.context = int(getattr(config, "max_position_embeddings", 0) or 2048)
        eos: set[int] = set()
        for source in (getattr(self.model.generation_config, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif isinstance(source, (list, tuple)):
                eos.update(int(t) for t in source)
        self.eos_ids = frozenset(eos)
        self._kv_token_bytes = kv_bytes_per_token(config, DTYPES[dtype_name])
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (min(eos) if eos else 0))
        elapsed = time.monotonic() - started
        log.info("transformers backend loaded %s on %s/%s in %.1f s", path, device, dtype_name, elapsed)

    def _iteration(self) -> bool:
        """One turn of the loop: take new jobs, score choices, admit newcomers, decode one step.

        Returns True when the thread should stop.
        """
        idle = not self._rows and not self._waiting
        jobs, stopping = self._take_inbox(block=idle, timeout=None)
        if stopping:
            return True
        choice_jobs = self._accept(jobs)
        if choice_jobs:
            self._score_choices(choice_jobs)
        self._drop_cancelled()
        if self._waiting and len(self._rows) < self._opts.max_batch_size:
            if not self._rows and self._opts.batch_wait_ms > 0:
                # Idle until now: give concurrent submitters a moment to join the first prefill.
                if self._gather_more():
                    return True
            self._admit()
        if self._rows:
            self._step()
        return False

    def _take_inbox(self, *, block: bool, timeout: float | None) -> tuple[list[Job], bool]:
        with self._cond:
            if block and not self._inbox:
                self._cond.wait(timeout)
            items = list(self._inbox)
            self._inbox.clear()
        stopping = any(isinstance(item, Stop) for item in items)
        return [item for item in items if isinstance(item, Job)], stopping

    def _gather_more(self) -> bool:
        """Collect arrivals for up to ``batch_wait_ms``; returns True when asked to stop."""
        deadline = time.monotonic() + self._opts.batch_wait_ms / 1000
        while len(self._waiting) < self._opts.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            jobs, stopping = self._take_inbox(block=True, timeout=remaining)
            if stopping:
                return True
            choice_jobs = self._accept(jobs)
            if choice_jobs:
                self._score_choices(choice_jobs)
        return False

    def _accept(self, jobs: list[Job]) -> list[ChoiceJob]:
        """Tokenise new generation jobs into the waiting queue; return the choice jobs."""
        choice_jobs: list[ChoiceJob] = []
        for job in jobs:
            if job.cancelled:
                continue
            if self._load_error is not None:
                self._send(job, BackendError(self._load_error.message, permanent=self._load_error.permanent), last=True)
                continue
            if isinstance(job, ChoiceJob):
                choice_jobs.append(job)
                continue
            assert isinstance(job, GenJob)
            try:
                prompt_ids = self._encode_chat(job.request.messages)
            except BackendError as exc:
                self._send(job, exc, last=True)
                continue
            except Exception as exc:  # noqa: BLE001 - a bad request must not stop the thread
                self._send(job, BackendError(f"could not render the prompt: {exc}", permanent=True), last=True)
                continue
            max_new = min(job.request.params.max_tokens, self.context - len(prompt_ids))
            self._waiting.append(_Row(job, prompt_ids, max_new, self.eos_ids))
        return choice_jobs

    def _encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Chat template with the generation prompt, as token ids; too long is a permanent error.

        A final assistant message is continued (``continue_final_message``), not closed.
        """
        assert self.tokenizer is not None
        if not messages:
            raise BackendError("a request needs at least one message", permanent=True)
        prefill = continues_reply(messages)
        text = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=not prefill, continue_final_message=prefill, tokenize=False
        )
        assert isinstance(text, str)
        # The template already contains every special token the model expects.
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) >= self.context:
            raise BackendError(
                f"prompt is {len(ids)} tokens but the model's context is {self.context} tokens; "
                "shorten the prompt (nothing would be left to generate)",
                permanent=True,
            )
        return ids

    # ---- admission and the running batch ----

    def _drop_cancelled(self) -> None:
        if any(row.job.cancelled for row in self._waiting):
            self._waiting = collections.deque(row for row in self._waiting if not row.job.cancelled)
        if any(row.job.cancelled for row in self._rows):
            self._keep([i for i, row in enumerate(self._rows) if not row.job.cancelled])

    def _admit(self) -> None:
        """Prefill the oldest waiting rows and merge them into the running batch (FIFO).

        A row whose prompt starts with a cached sequence only runs the rest of its prompt. A row
        that shares a much longer prefix with a row of this group than with anything cached (two
        debaters given the same story, say) waits for the next admission, one decoding step
        later, when that row's prompt is cached: the shared part then runs once, not twice.
        """
        room = self._opts.max_batch_size - len(self._rows)
        group: list[_Row] = []
        reuse: list[tuple[PrefixEntry | None, int]] = []
        deferred: list[_Row] = []
        longest = 0
        while self._waiting and len(group) < room:
            candidate = self._waiting.popleft()
            entry, shared = self._prefixes.longest(candidate.prompt_ids)
            if group and self._may_defer(candidate) and self._sibling_prefix(candidate, group) >= shared + _DEFER_GAIN:
                candidate.deferred = True
                deferred.append(candidate)
                continue
            suffix = len(candidate.prompt_ids) - shared
            padded = max(longest, suffix) * (len(group) + 1)
            if group and padded > self._opts.max_prefill_tokens:
                self._waiting.appendleft(candidate)
                break
            group.append(candidate)
            reuse.append((entry, shared))
            longest = max(longest, suffix)
        self._waiting.extendleft(reversed(deferred))  # first in line next time, in their order
        try:
            cache, mask, logits = self._prefill([row.prompt_ids for row in group], reuse)
            self._remember_prompts(group, cache, mask)
            tokens = self._choose(group, logits)
            alive = [i for i, (row, token) in enumerate(zip(group, tokens)) if not self._advance(row, token)]
            if not alive:
                return
            if len(alive) < len(group):
                index = torch.tensor(alive, device=mask.device)
                for layer in cache_layers(cache):
                    layer.select_rows(index, 0)
                mask = mask.index_select(0, index)
        except Exception as exc:  # noqa: BLE001 - fail these requests, keep serving the others
            log.exception("transformers backend: prefill failed")
            self._fail(group, exc)
            return
        rows = [group[i] for i in alive]
        nxt = torch.tensor([tokens[i] for i in alive], device=mask.device)
        try:
            self._merge(rows, cache, mask, nxt, mask.sum(dim=1))
        except Exception as exc:  # noqa: BLE001 - the running batch may be half-merged: fail it all
            log.exception("transformers backend: merging newcomers failed")
            self._fail(rows, exc)
            self._fail_running(exc)

    def _may_defer(self, row: _Row) -> bool:
        """Whether ``row`` may wait for a sibling: once only, and only if such a prompt fits in the cache."""
        return not row.deferred and 0 < len(row.prompt_ids) * self._kv_token_bytes <= self._prefixes.capacity // 2

    @staticmethod
    def _sibling_prefix(candidate: _Row, group: list[_Row]) -> int:
        """The longest prefix ``candidate`` could take from a group member's prompt once that is cached."""
        limit = len(candidate.prompt_ids) - 1
        return max(common_prefix(row.prompt_ids, candidate.prompt_ids, limit) for row in group)

    def _prefill(
        self, prompts: list[list[int]], reuse: list[tuple[PrefixEntry | None, int]]
    ) -> tuple[Cache, torch.Tensor, torch.Tensor]:
        """Run left-padded prompts; return their cache, mask and next-token logits ``[n, V]``.

        ``reuse[i]`` is a cached entry and how many of prompt ``i``'s first tokens it covers. Every
        row runs the same number of tokens, ``longest``, the longest uncovered rest: a row with a
        shorter rest runs some of its covered tokens again instead of padding (the same work, as
        padding is computed too). So each row is ``[padding][cached prefix][tokens run]`` with no
        gap, and the cache is no wider than the longest prompt.
        """
        assert self.model is not None
        started = time.perf_counter()
        longest = max(len(prompt) - shared for prompt, (_, shared) in zip(prompts, reuse))
        reuse = [
            (entry, max(0, len(prompt) - longest)) if entry is not None else (None, 0)
            for prompt, (entry, _) in zip(prompts, reuse)
        ]
        width = max(used for _, used in reuse)
        ids, mask = self._left_pad([prompt[used:] for prompt, (_, used) in zip(prompts, reuse)])
        self.stats["prefill_tokens"] += sum(len(p) for p in prompts)
        if width == 0:
            cache = Cache(layer_class_to_replicate=BufferedLayer)
        else:
            self.stats["reused_tokens"] += sum(used for _, used in reuse)
            self.stats["prefix_hits"] += sum(1 for _, used in reuse if used)
            head = torch.zeros((len(prompts), width), dtype=mask.dtype, device=mask.device)
            for i, (_, used) in enumerate(reuse):
                head[i, width - used :] = 1
            mask = torch.cat([head, mask], dim=1)
            cache = self._preloaded_cache(reuse, width, ids.shape[1])
        positions = ((mask.cumsum(dim=1) - 1).clamp_min(0))[:, width:]
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1
        )
        self.stats["prefills"] += 1
        self.stats["prefill_ms"] += round((time.perf_counter() - started) * 1000)
        return out.cache, mask, out.logits[:, -1, :]

    def _preloaded_cache(self, reuse: list[tuple[PrefixEntry | None, int]], width: int, incoming: int) -> Cache:
        """A cache of ``width`` columns holding each row's cached prefix right-aligned, zeros elsewhere."""
        sample = next(entry for entry, shared in reuse if entry is not None and shared)
        capacity = width + incoming + max(64, (width + incoming) // 4)
        layers: list[BufferedLayer] = []
        for index, (k0, v0) in enumerate(zip(sample.keys, sample.values, strict=True)):
            kbuf = k0.new_zeros((len(reuse), k0.shape[0], capacity, k0.shape[2]))
            vbuf = v0.new_zeros((len(reuse), v0.shape[0], capacity, v0.shape[2]))
            for row, (entry, shared) in enumerate(reuse):
                if entry is not None and shared:
                    kbuf[row, :, width - shared : width].copy_(entry.keys[index][:, :shared])
                    vbuf[row, :, width - shared : width].copy_(entry.values[index][:, :shared])
            layers.append(BufferedLayer.preloaded(kbuf, vbuf, width))
        return Cache(layers=layers)

    def _remember_prompts(self, rows: list[_Row], cache: Cache, mask: torch.Tensor) -> None:
        """Put each prefilled prompt's keys and values in the prefix cache."""
        for i, row in enumerate(rows):
            self._remember(row.prompt_ids, cache, mask, i)

    def _remember(self, ids: list[int], cache: Cache, mask: torch.Tensor, row: int) -> None:
        """Copy one row's keys and values into the prefix cache; a failure here fails no request."""
        if not self._prefixes.wants(ids, len(ids) * self._kv_token_bytes):
            return
        try:
            columns = mask[row].nonzero().squeeze(1)
            assert len(columns) == len(ids), "the cache must hold exactly the row's tokens"
            pairs = [layer.row_columns(row, columns) for layer in cache_layers(cache)]
            self._prefixes.add(list(ids), [k for k, _ in pairs], [v for _, v in pairs])
        except Exception:  # noqa: BLE001 - out of memory, say: serve on without the cache's contents
            log.exception("transformers backend: could not store a prefix; emptying the prefix cache")
            self._prefixes.clear()

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[i, longest - len(prompt) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _merge(self, rows: list[_Row], cache: Cache, mask: torch.Tensor, nxt: torch.Tensor, pos: torch.Tensor) -> None:
        """Append prefilled rows to the running batch, left-padding the shorter cache."""
        if not self._rows:
            self._rows, self._cache, self._mask, self._next, self._pos = rows, cache, mask, nxt, pos
            return
        assert self._cache is not None and self._mask is not None and self._next is not None and self._pos is not None
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(cache_layers(self._cache), cache_layers(cache), strict=True):
            old.stack_below(new, width)
        self._mask = torch.cat(
            [F.pad(self._mask, (width - self._mask.shape[1], 0)), F.pad(mask, (width - mask.shape[1], 0))], dim=0
        )
        self._next = torch.cat([self._next, nxt])
        self._pos = torch.cat([self._pos, pos])
        self._rows = self._rows + rows

    def _keep(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` of the running batch and trim all-padding leading columns."""
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._cache, self._mask, self._next, self._pos = [], None, None, None, None
            return
        assert self._cache is not None and self._mask is not None and self._next is not None and self._pos is not None
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        # Rows are [padding..., tokens...]; the smallest leading padding can go for every row.
        trim = int(mask.argmax(dim=1).min())
        for layer in cache_layers(self._cache):
            layer.select_rows(index, trim)
        self._mask = mask[:, trim:]
        self._next = self._next.index_select(0, index)
        self._pos = self._pos.index_select(0, index)
        self._rows = [self._rows[i] for i in keep]

    def _step(self) -> None:
        """Feed every row's pending token, sample the next one, retire finished rows."""
        assert self.model is not None and self._mask is not None and self._next is not None and self._pos is not None
        rows = self._rows
        try:
            started = time.perf_counter()
            ones = torch.ones((len(rows), 1), dtype=self._mask.dtype, device=self._mask.device)
            mask = torch.cat([self._mask, ones], dim=1)
            out = self.model(
                input_ids=self._next[:, None],
                attention_mask=mask,
                position_ids=self._pos[:, None],
                cache=self._cache,
                use_cache=True,
            )
            self._mask = mask
            self._pos = self._pos + 1
            tokens = self._choose(rows, out.logits[:, -1, :])
            self.stats["decode_steps"] += 1
            self.stats["decode_ms"] += round((time.perf_counter() - started) * 1000)
        except Exception as exc:  # noqa: BLE001 - fail the batch, keep the thread
            log.exception("transformers backend: decoding step failed")
            self._fail_running(exc)
            return
        # Past this point the batch is consistent; anything raising below is caught by _run.
        keep = [i for i, (row, token) in enumerate(zip(rows, tokens)) if not self._advance(row, token)]
        if len(keep) < len(rows):
            assert self._cache is not None
            kept = set(keep)
            for i, row in enumerate(rows):
                if i not in kept:  # the cache holds its prompt and every sampled token but the last
                    self._remember(row.prompt_ids + row.sampled[:-1], self._cache, self._mask, i)
        self._next = torch.tensor(tokens, device=self._mask.device)
        self._keep(keep)

    # ---- sampling and text ----

    def _choose(self, rows: Sequence[_Row], logits: torch.Tensor) -> list[int]:
        """The next token of each row: argmax for greedy rows, a seeded nucleus draw otherwise."""
        tokens: list[int] = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            if row.constraint is not None:
                tokens[i] = self._choose_constrained(row, logits[i])
        sampled = [i for i, row in enumerate(rows) if row.temperature > 0 and row.constraint is None]
        if not sampled:
            return tokens
        sub = logits.index_select(0, torch.tensor(sampled, device=logits.device)).float().cpu()
        temps = torch.tensor([rows[i].temperature for i in sampled], dtype=torch.float32)
        probs = torch.softmax(sub / temps[:, None], dim=-1)
        k = min(_TOP_K_PROBE, probs.shape[-1])
        top_p_vals, top_ids = probs.topk(k, dim=-1)
        cumulative = top_p_vals.cumsum(dim=-1)
        for j, i in enumerate(sampled):
            row = rows[i]
            assert row.generator is not None
            if row.top_p >= 1.0:
                tokens[i] = int(torch.multinomial(probs[j], 1, generator=row.generator))
                continue
            if float(cumulative[j, -1]) >= row.top_p:
                vals, ids = top_p_vals[j], top_ids[j]
            else:  # a flat distribution: the nucleus is wider than the probe, sort it all
                vals, ids = probs[j].sort(descending=True)
            # Keep the smallest prefix whose mass reaches top_p (always at least one token).
            keep = int(((vals.cumsum(dim=-1) - vals) < row.top_p).sum())
            choice = int(torch.multinomial(vals[:keep], 1, generator=row.generator))
            tokens[i] = int(ids[choice])
        return tokens

    def _choose_constrained(self, row: _Row, logits: torch.Tensor) -> int:
        """The next token of a row under a constraint: the same greedy or nucleus draw, over the
        tokens that keep it (renormalised); an end-of-sequence token when none does.

        The candidates are the model's likeliest tokens and, for a copy, the first token of each way
        the source goes on after the text so far (``CompiledConstraint.continuations``), so a copy
        can always go on when the source does; the model's own probabilities choose among them.
        """
        assert row.constraint is not None and self.tokenizer is not None
        scores = logits.float().cpu()
        if row.temperature > 0:
            scores = scores / row.temperature
        probs = torch.softmax(scores, dim=-1)
        candidates: list[int] = probs.topk(min(_CONSTRAINED_PROBE, probs.shape[-1])).indices.tolist()
        for rest in row.constraint.continuations(row.text):
            ids = self.tokenizer.encode(rest, add_special_tokens=False)
            if ids and ids[0] not in candidates:
                candidates.append(ids[0])
        allowed = sorted(
            (
                (float(probs[t]), t)
                for t in candidates
                if (
                    row.constraint.allows_end(row.text)
                    if t in row.eos_ids
                    else row.constraint.allows(row.text + self._piece(t))
                )
            ),
            reverse=True,
        )
        if not allowed:
            return min(row.eos_ids) if row.eos_ids else candidates[0]
        if row.temperature <= 0 or len(allowed) == 1:
            return allowed[0][1]
        kept = torch.tensor([p for p, _ in allowed])
        kept = kept / kept.sum()
        keep = int(((kept.cumsum(dim=-1) - kept) < row.top_p).sum())
        assert row.generator is not None
        choice = int(torch.multinomial(kept[:keep], 1, generator=row.generator))
        return allowed[choice][1]

    def _piece(self, token: int) -> str:
        """One token's text on its own; a token holding part of a character never keeps a constraint."""
        piece = self._pieces.get(token)
        if piece is None:
            assert self.tokenizer is not None
            text = self.tokenizer.decode([token], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            # A lone byte of a multi-byte character decodes to U+FFFD, which no story holds.
            piece = self._pieces[token] = text
        return piece

    def _advance(self, row: _Row, token: int) -> bool:
        """Record ``token`` for ``row``, send any settled text; True when the row is finished."""
        assert self.tokenizer is not None
        row.completion_tokens += 1
        row.sampled.append(token)
        finish: str | None = None
        if token in row.eos_ids:
            finish = "stop"
        else:
            row.generated.append(token)
            if row.completion_tokens >= row.max_new:
                finish = "length"
        text = self.tokenizer.decode(row.generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        row.text = text
        settled = text if finish else text.rstrip(REPLACEMENT)
        cut = find_stop(settled, row.stop, len(row.emitted))
        if cut is not None:
            settled, finish = settled[:cut], "stop"
        elif finish is None:
            settled = settled[: len(settled) - partial_stop(settled, row.stop, len(row.emitted))]
        if not settled.startswith(row.emitted):
            # Byte-level BPE decoding only ever extends the text; if a tokenizer breaks that, keep
            # what was sent (deltas must still add up to the final text) and log it.
            log.warning("transformers backend: detokenised text changed after it was sent")
            settled = row.emitted + settled[len(row.emitted) :]
        delta = settled[len(row.emitted) :]
        if delta:
            row.emitted = settled
            if row.job.stream:
                self._send(row.job, Delta(delta))
        if finish is None:
            return False
        final = Final(
            text=row.emitted,
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=row.completion_tokens,
            finish_reason=finish,
        )
        self._send(row.job, final, last=True)
        return True

    # ---- choice scoring ----

    def _score_choices(self, jobs: list[ChoiceJob]) -> None:
        """One forward pass (per ``max_batch_size`` group) for pending ``choice_probs`` requests."""
        assert self.tokenizer is not None
        ready: list[tuple[ChoiceJob, list[int], list[list[int]]]] = []
        for job in jobs:
            try:
                prompt = self._encode_chat(job.messages)
                candidates = [label_tokens(self.tokenizer, label) for label in job.labels]
            except BackendError as exc:
                self._send(job, exc, last=True)
                continue
            except Exception as exc:  # noqa: BLE001
                self._send(job, BackendError(f"could not render the prompt: {exc}", permanent=True), last=True)
                continue
            ready.append((job, prompt, candidates))
        size = self._opts.max_batch_size
        for start in range(0, len(ready), size):
            chunk = ready[start : start + size]
            try:
                # A judge that reasoned first is scored on its reasoning prompt plus the reasoning:
                # that prefix is in the cache.
                prompts = [prompt for _, prompt, _ in chunk]
                reuse = [self._prefixes.longest(p) for p in prompts]
                if any(shared for _, shared in reuse):
                    _, _, logits = self._prefill(prompts, reuse)
                else:  # nothing to reuse: no need to keep every layer's keys and values
                    ids, mask = self._left_pad(prompts)
                    positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
                    assert self.model is not None
                    out = self.model(
                        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=1
                    )
                    logits = out.logits[:, -1, :]
                probs = torch.softmax(logits.float(), dim=-1).cpu()
            except Exception as exc:  # noqa: BLE001
                log.exception("transformers backend: choice scoring failed")
                for job, _, _ in chunk:
                    self._send(job, BackendError(f"choice scoring failed: {type(exc).__name__}: {exc}"), last=True)
                continue
            for row_probs, (job, _, candidates) in zip(probs, chunk):
                self._send(job, label_probs(row_probs, candidates), last=True)

    # ---- delivery ----

    def _send(self, job: Job, item: StreamItem | list[float] | BackendError, *, last: bool = False) -> None:
        if last:
            job.done = True
        self._outbox.setdefault(job.loop, []).append((job, item))

    def _flush(self) -> None:
        """Hand this step's items to their event loops: one thread-safe callback per loop."""
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(deliver, items)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                for job, _ in items:
                    job.cancelled = True

    def _fail(self, rows: Sequence[_Row], exc: Exception) -> None:
        """Fail these rows' requests (transient: a retry may well succeed) unless already finished."""
        for row in rows:
            if not row.job.done:
                self._send(row.job, BackendError(f"generation failed: {type(exc).__name__}: {exc}"), last=True)

    def _fail_running(self, exc: Exception) -> None:
        """Fail every request in the running batch and drop the batch."""
        self._fail(self._rows, exc)
        self._rows, self._cache, self._mask, self._next, self._pos = [], None, None, None, None

    def _shutdown(self) -> None:
        closed = "transformers backend was closed"
        pending = [row.job for row in self._rows] + [row.job for row in self._waiting]
        with self._cond:
            self._closed = True
            pending += [item for item in self._inbox if isinstance(item, Job)]
            self._inbox.clear()
        for job in pending:
            if not job.done:
                self._send(job, BackendError(closed), last=True)
        self._rows, self._waiting = [], collections.deque()
        self._cache = self._mask = self._next = self._pos = None
