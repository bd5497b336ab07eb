"""Unit tests of the pure parts: text streaming, durations, names, templates, GGUF metadata."""

from __future__ import annotations

import pytest

from corral.config import FOREVER, Settings, parse_duration, parse_host, parse_size
from corral.models.store import InvalidName, ModelName, Store, check_digest
from corral.models.template import TemplateError, render_chat
from corral.runner.textstream import TextStream


def feed_all(stream: TextStream, pieces: list[bytes]) -> str:
    return "".join(stream.feed(p) for p in pieces) + ("" if stream.stopped else stream.flush())


def test_textstream_holds_split_utf8():
    s = TextStream([])
    euro = "€".encode()
    assert s.feed(euro[:1]) == ""
    assert s.feed(euro[1:]) == "€"
    assert s.flush() == ""


def test_textstream_stop_spanning_tokens():
    s = TextStream(["END"])
    out = [s.feed(b"hello E"), s.feed(b"N"), s.feed(b"D tail")]
    assert "".join(out) == "hello "
    assert s.stopped


def test_textstream_releases_false_prefix():
    s = TextStream(["ENDING"])
    assert feed_all(s, [b"the E", b"N", b"x"]) == "the ENx"
    assert not s.stopped


@pytest.mark.parametrize("value,seconds", [("5m", 300), ("1h30m", 5400), (10, 10), ("-1", FOREVER),
                                           (-5, FOREVER), ("0", 0), (0, 0), ("1.5s", 1.5), ("250ms", 0.25)])
def test_parse_duration(value, seconds):
    assert parse_duration(value, 300) == seconds


@pytest.mark.parametrize("value", ["soon", "5x", "m", True])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError):
        parse_duration(value, 300)


def test_settings_from_env():
    s = Settings.from_env({"OLLAMA_HOST": "0.0.0.0:9999", "CORRAL_MAX_QUEUE": "7", "OLLAMA_MAX_QUEUE": "3",
                           "OLLAMA_KEEP_ALIVE": "1m", "CORRAL_MEMORY_LIMIT": "1.5GiB",
                           "CORRAL_NUM_PARALLEL_SMOLLM2_135M": "2", "OLLAMA_NUM_PARALLEL": "3"})
    assert (s.host, s.port, s.max_queue, s.keep_alive) == ("0.0.0.0", 9999, 7, 60)
    assert s.memory_limit == int(1.5 * 2**30)
    assert s.parallel_for("smollm2:135m") == 2 and s.parallel_for("gemma3:270m") == 3
    assert Settings.from_env({}).host == "127.0.0.1"
    assert parse_host("http://example.com") == ("example.com", 80)
    assert parse_size("800MB") == 800_000_000


def test_model_names():
    n = ModelName.parse("smollm2:135m")
    assert (n.host, n.namespace, n.model, n.tag) == ("registry.ollama.ai", "library", "smollm2", "135m")
    assert ModelName.parse("smollm2").tag == "latest"
    assert ModelName.parse("localhost:5000/me/m:v1").host == "localhost:5000"
    for bad in ["../x", "a/../b", "/etc/passwd", "x:../../y", "", "a/b/c/d", "..:1"]:
        with pytest.raises(InvalidName):
            ModelName.parse(bad)


def test_digests_are_checked_before_paths(tmp_path):
    store = Store(tmp_path)
    good = "sha256:" + "a" * 64
    assert store.blob_path(good).name == "sha256-" + "a" * 64
    for bad in ["sha256:../../x", "sha256:" + "A" * 64, "md5:abc", "sha256-" + "a" * 63]:
        with pytest.raises(InvalidName):
            check_digest(bad)
        with pytest.raises(InvalidName):
            store.blob_path(bad)


SMOL_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
                 " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_render_chat_template():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"}, {"role": "user", "content": "U2"}]
    text = render_chat(SMOL_TEMPLATE, msgs).text
    assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                    "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n")


def test_template_sandbox_blocks_python_internals():
    # The shape of CVE-2024-34359's payload: reach os through Python object internals.
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}{{ self.__init__.__globals__ }}"
    with pytest.raises(TemplateError):
        render_chat(evil, [{"role": "user", "content": "hi"}])


def test_template_cannot_mutate():
    with pytest.raises(TemplateError):
        render_chat("{% set x = messages.append({'role': 'user'}) %}{{ x }}", [{"role": "user", "content": "hi"}])


def test_fallback_without_template():
    p = render_chat(None, [{"role": "user", "content": "Hi"}])
    assert p.text.endswith("Assistant:") and "User: Hi" in p.text and p.stop


@pytest.mark.parametrize("min_piece", [2, 32])
def test_prompt_chunks_are_never_shorter_than_min_piece(min_piece):
    from corral.runner.slot import prompt_chunk

    for length in range(1, 120):
        for room in (0, 1, 3, 17, 40, 512):
            left, pieces = length, []
            while left:
                take = prompt_chunk(left, room, min_piece)
                assert 0 < take <= left
                pieces.append(take)
                left -= take
            assert sum(pieces) == length
            assert all(p >= min(min_piece, length) for p in pieces), (length, room, pieces)


def test_modelfile_refuses_non_finite_parameters():
    import pytest

    from corral.models.modelfile import ModelfileError, add_parameter

    for value in ("inf", "-inf", "nan", "1e309"):
        with pytest.raises(ModelfileError):
            add_parameter({}, "temperature", value)
    params: dict = {}
    add_parameter(params, "temperature", "0.5")
    assert params == {"temperature": 0.5}
