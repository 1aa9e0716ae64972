"""The engine of the transformers backend (:mod:`debaters.backends.transformers_backend`), one
concern a module:

* :mod:`.loading`: options, dtype, where the model lives, the tokenizer.
* :mod:`.jobs`: what the event-loop side hands to the scheduler thread, and how items come back.
* :mod:`.scheduler`: the continuous-batching thread that owns the model (admission, prefill,
  decoding steps, sampling, detokenisation).
* :mod:`.kv_cache`: the growable KV-cache layer the running batch lives in.
* :mod:`.prefix_cache`: keys and values of recent sequences, reused by later prompts.
* :mod:`.choices`: the label tokens and probabilities behind ``choice_probs``.
* :mod:`.stops`: stop strings in streamed text.

Importing this package sets ``GOMP_SPINCOUNT`` (below) before anything imports torch.
"""

import os
import sys

if "torch" not in sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
    # torch's OpenMP threads (GNU libgomp in the pip wheels) busy-wait for each other after every
    # parallel region. On a small machine shared with the web server, the database or another
    # worker, a spinning thread holds the core its descheduled sibling needs: a decoding step
    # measured 5-25x slower on 2 busy cores. Passive waiting fixes that but costs 25-60% on an idle
    # machine; a short spin (measured on 2 idle cores: 43 ms per batch-1 step vs 36 ms spinning
    # and 57 ms passive) keeps most of both. libgomp reads this once, when torch is first
    # imported, so it only takes effect if this package is the first to import torch. Workers get it
    # from their environment (`manage.py serve`, docker/compose.yaml, .env.example); this default is
    # for everything else that runs the backend in process (benchmarks, tests, a shell).
    os.environ["GOMP_SPINCOUNT"] = "5000"
