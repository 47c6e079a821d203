"""What log-probabilities and n choices cost, on the default model, without HTTP.

1. Sampling one row: ``SamplerChain.sample`` (what every sequence does) against
   ``LogprobSampler.sample`` with 0, 5 and 20 alternatives (what only the sequences that ask
   for log-probabilities do), greedy and with temperature, penalties and a logit bias.
2. n = 4 choices of one long prompt through the engine (one prefill, three copies) against
   four separate requests of it submitted together: prompt tokens decoded and wall time.

    .venv/bin/python scripts/bench_choices.py [--prompt-words 400] [--repeat 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from appliance import config
from appliance.engine.engine import Engine
from appliance.engine.engine_config import EngineConfig
from appliance.engine.logprobs import LogprobSampler
from appliance.engine.models import ModelStore
from appliance.engine.native import Batch, ContextConfig, LlamaContext, LlamaModel, SamplerChain
from appliance.engine.types import GenerationRequest, SamplingParams


def _model_path() -> Path:
    settings = config.load(env={})
    store = ModelStore(settings.manifest, settings.models_dir)
    return store.verify(store.resolve(settings.model)).path


def sampling_cost(path: Path, repeat: int) -> None:
    model = LlamaModel(path)
    ctx = LlamaContext(model, ContextConfig(n_ctx=512, n_seq_max=1, n_batch=64, n_threads=2))
    tokens = model.tokenize("The capital of France is", add_special=True, parse_special=False)
    batch = Batch(64)
    row = batch.add_span(tokens, 0, 0, True)
    assert ctx.decode(batch) == 0
    reader = LogprobSampler(model)
    for name, params in (("greedy", SamplingParams(temperature=0.0)),
                         ("t=0.8, top_p, penalties, bias", SamplingParams(
                             temperature=0.8, top_p=0.95, repeat_penalty=1.1,
                             logit_bias=((42, -5.0),)))):
        def timed(top: int | None, params: SamplingParams = params) -> float:
            chain = SamplerChain(model, params, seed=1)
            runs = []
            for _ in range(repeat):
                t0 = time.perf_counter_ns()
                if top is None:
                    chain.sample(ctx, row)
                else:
                    reader.sample(chain, ctx, row, top)
                runs.append(time.perf_counter_ns() - t0)
            chain.close()
            return statistics.median(runs) / 1e3

        cells = [f"plain {timed(None):.0f} us"] + [f"logprobs top={k} {timed(k):.0f} us"
                                                   for k in (0, 5, 20)]
        print(f"sample one row ({name}, vocab {model.n_vocab}): " + ", ".join(cells))
    ctx.close()
    model.close()


async def _run(engine: Engine, request: GenerationRequest, n: int, separate: bool) -> float:
    t0 = time.perf_counter()
    streams = ([engine.submit(request) for _ in range(n)] if separate
               else engine.submit_n(request, n))
    for stream in streams:
        async for _ in stream:
            pass
    return time.perf_counter() - t0


async def choices_cost(path: Path, words: int) -> None:
    engine = Engine(EngineConfig(model_path=path, parallel=4, ctx_size=1024, batch_size=512,
                                 n_threads=2, prefix_reuse_min=0))
    engine.start(asyncio.get_running_loop())
    while engine.state not in ("ready", "failed"):
        await asyncio.sleep(0.1)
    assert engine.model is not None
    prompt = engine.model.tokenize("Summarise: " + "the quick brown fox " * (words // 4),
                                   add_special=True, parse_special=False)
    request = GenerationRequest(tuple(prompt), max_tokens=8,
                                sampling=SamplingParams(temperature=0.8, seed=3))
    for separate in (True, False, True, False):
        before = engine.stats.prefilled_tokens
        seconds = await _run(engine, request, 4, separate)
        await asyncio.sleep(0.2)  # (the stats are refreshed after the step)
        what = "4 separate requests" if separate else "n=4 in one request"
        print(f"{what}, prompt {len(prompt)} tokens, 8 tokens each: prompt tokens decoded "
              f"{engine.stats.prefilled_tokens - before}, {seconds:.2f} s")
    await asyncio.to_thread(engine.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-words", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    path = _model_path()
    sampling_cost(path, args.repeat)
    asyncio.run(choices_cost(path, args.prompt_words))


if __name__ == "__main__":
    main()
