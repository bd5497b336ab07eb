"""Sampling rules: llama.cpp sampler chains from Ollama's options, and when plain argmax will do."""

from __future__ import annotations

import ctypes

import llama_cpp as ll

from corral.errors import ClientError
from corral.runner.grammar import grammar_for
from corral.runner.protocol import GenerationOptions


def is_plain_greedy(o: GenerationOptions) -> bool:
    """Temperature 0 with no penalty and no grammar: the token is just the argmax."""
    penalties = (o.repeat_last_n != 0 and o.repeat_penalty != 1.0) or o.frequency_penalty or o.presence_penalty
    return o.temperature <= 0 and not penalties and not o.format


def make_sampler(vocab: ctypes.c_void_p, n_vocab: int, n_ctx: int, o: GenerationOptions) -> ctypes.c_void_p:
    """llama.cpp's sampler chain for these options: penalties, the `format` grammar, then greedy
    or top-k / top-p / min-p / temperature / seeded draw. ValueError for a grammar llama.cpp
    rejects. The caller frees it (llama_sampler_free)."""
    chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
    add = lambda s: ll.llama_sampler_chain_add(chain, s)
    last_n = n_ctx if o.repeat_last_n < 0 else o.repeat_last_n
    if last_n and (o.repeat_penalty != 1.0 or o.frequency_penalty or o.presence_penalty):
        add(ll.llama_sampler_init_penalties(n_vocab, last_n, o.repeat_penalty,
                                            o.frequency_penalty, o.presence_penalty))
    grammar = grammar_for(o.format)
    if grammar:
        constraint = ll.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not constraint:
            ll.llama_sampler_free(chain)
            raise ClientError("format: llama.cpp could not parse the grammar for this schema")
        add(constraint)
    if o.temperature <= 0:
        add(ll.llama_sampler_init_greedy())
        return chain
    if o.top_k > 0:
        add(ll.llama_sampler_init_top_k(o.top_k))
    if o.top_p < 1.0:
        add(ll.llama_sampler_init_top_p(o.top_p, 1))
    if o.min_p > 0.0:
        add(ll.llama_sampler_init_min_p(o.min_p, 1))
    add(ll.llama_sampler_init_temp(o.temperature))
    seed = o.seed if o.seed >= 0 else ll.LLAMA_DEFAULT_SEED
    add(ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain
