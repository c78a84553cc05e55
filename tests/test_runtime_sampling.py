"""Sampler: greedy at temperature 0, nucleus sampling with a seeded, reproducible generator; and
`OrtCausalLM.generate` with sampling."""

import numpy as np
import pytest

from gptctl.errors import BadInput
from gptctl.runtime.sampling import Sampler, SamplingParams

PROMPTS = [[5, 17, 33, 80, 99, 120, 7, 8], [3, 9, 27]]


def random_logits(n=40, vocab=300, seed=1):
    return np.random.default_rng(seed).normal(size=(n, vocab)).astype(np.float32) * 3


def frequencies(sampler, logits, draws=4000):
    return np.bincount([sampler.pick(logits) for _ in range(draws)], minlength=len(logits)) / draws


def test_temperature_zero_is_argmax_lowest_id_on_ties():
    sampler = Sampler(SamplingParams())
    assert all(sampler.pick(row) == int(row.argmax()) for row in random_logits())
    assert sampler.pick(np.array([1.0, 3.0, 3.0, 0.0])) == 1


def test_a_tiny_nucleus_is_greedy_at_any_temperature():
    sampler = Sampler(SamplingParams(temperature=1.5, top_p=1e-6, seed=0))
    assert [sampler.pick(row) for row in random_logits()] == [int(row.argmax()) for row in random_logits()]
    assert sampler.pick(np.array([1.0, 3.0, 3.0, 0.0])) == 1


def test_same_seed_same_tokens_other_seed_other_tokens():
    rows = random_logits(60)
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=7)
    first = [Sampler(params).pick(r) for r in rows]
    a, b = Sampler(params), Sampler(params)
    assert [a.pick(r) for r in rows] == [b.pick(r) for r in rows]
    other = Sampler(SamplingParams(temperature=1.0, top_p=0.95, seed=8))
    assert [other.pick(r) for r in rows] != [a.pick(r) for r in rows]
    # Not greedy either: sampling at T=1 over these logits leaves the argmax often.
    assert first != [int(r.argmax()) for r in rows]


def test_draws_follow_softmax_of_logits_over_temperature():
    logits = np.log(np.array([1.0, 3.0]))  # p = 0.25, 0.75 at T=1; 0.1, 0.9 at T=0.5
    assert frequencies(Sampler(SamplingParams(temperature=1.0, seed=0)), logits)[1] == pytest.approx(0.75, abs=0.03)
    assert frequencies(Sampler(SamplingParams(temperature=0.5, seed=0)), logits)[1] == pytest.approx(0.9, abs=0.03)


def test_nucleus_drops_the_tail_and_renormalises():
    logits = np.log(np.array([0.2, 0.5, 0.3, 1e-9]))
    freq = frequencies(Sampler(SamplingParams(temperature=1.0, top_p=0.7, seed=3)), logits)
    # The smallest set reaching 0.7 is {1 (0.5), 2 (0.3)}: drawn 5:3, the rest never.
    assert freq[0] == 0 and freq[3] == 0
    assert freq[1] == pytest.approx(0.625, abs=0.03)


def test_suppressed_ids_are_never_drawn():
    logits = np.array([2.0, -np.inf, 2.0, -np.inf])
    freq = frequencies(Sampler(SamplingParams(temperature=2.0, seed=0)), logits, draws=500)
    assert freq[1] == 0 and freq[3] == 0 and freq[0] > 0 and freq[2] > 0


@pytest.mark.parametrize(
    "bad", [dict(temperature=-0.1), dict(temperature=float("nan")), dict(top_p=0.0), dict(top_p=1.5)]
)
def test_bad_params_are_refused(bad):
    with pytest.raises(BadInput):
        SamplingParams(**bad)


@pytest.fixture(scope="module")
def llama(tiny_export_factory):
    from gptctl.runtime.session import OrtCausalLM

    lm, _ = OrtCausalLM.from_path(tiny_export_factory("llama"), "cpu", threads=1)
    return lm


def test_generate_with_a_seed_is_reproducible_and_each_row_samples_as_alone(llama):
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=11)
    first = llama.generate(PROMPTS, 12, sampling=params)
    assert llama.generate(PROMPTS, 12, sampling=params) == first
    assert first == [llama.generate([p], 12, sampling=params)[0] for p in PROMPTS]
    assert llama.generate(PROMPTS, 12, sampling=SamplingParams(temperature=1.0, top_p=0.9, seed=12)) != first
    assert first != llama.generate(PROMPTS, 12)


def test_generate_greedy_settings_equal_greedy(llama):
    greedy = [llama.greedy(np.array([p]), 8)[0].tolist() for p in PROMPTS]
    assert llama.generate(PROMPTS, 8, sampling=SamplingParams(temperature=0.0, seed=5)) == greedy
    assert llama.generate(PROMPTS, 8, sampling=SamplingParams(temperature=1.0, top_p=1e-6, seed=5)) == greedy
