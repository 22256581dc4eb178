"""The official `openai` Python client against a running `qwen-aot serve` (CPU, greedy).

Usage: openai_client_check.py BASE_URL EXPECTED_JSON
EXPECTED_JSON maps each chat message to `generate --chat MESSAGE --max-tokens 8` text.
Checks a non-streamed and a streamed chat completion, log-probabilities, function calls (forced or not) and
structured outputs as the client's typed objects, 8 concurrent clients, a client that leaves mid-stream, and that bad input is a 400 the
client raises as BadRequestError.
"""
import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai

MAX_TOKENS = 8


def greedy(client, message, **extra):
    """A greedy chat completion of one user message, MAX_TOKENS long."""
    return client.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": message}], max_tokens=MAX_TOKENS, temperature=0, **extra
    )


def chat(client, message):
    r = greedy(client, message)
    assert r.choices[0].finish_reason in ("length", "stop"), r
    assert r.usage.completion_tokens <= MAX_TOKENS, r.usage
    return r.choices[0].message.content


def chat_stream(client, message):
    stream = greedy(client, message, stream=True, stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert usage is not None and usage.completion_tokens <= MAX_TOKENS, usage
    return text


def main():
    base, expected = sys.argv[1], json.loads(sys.argv[2])
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)
    messages = list(expected)
    first = messages[0]

    listed = client.models.list().data
    assert len(listed) == 1 and client.models.retrieve(listed[0].id).id == listed[0].id, listed
    try:
        client.models.retrieve("no-such-model")
        raise AssertionError("an unknown model was found")
    except openai.NotFoundError as e:
        assert e.status_code == 404, e
    print("ok: models.list and models.retrieve (an unknown id is NotFoundError)")

    got = chat(client, first)
    assert got == expected[first], (got, expected[first])
    got = chat_stream(client, first)
    assert got == expected[first], (got, expected[first])
    print("ok: non-streamed and streamed text equal generate --chat:", repr(got))

    r = greedy(client, first, n=2)
    assert [c.index for c in r.choices] == [0, 1] and all(c.message.content == expected[first] for c in r.choices), r
    print("ok: n = 2 greedy choices, both the greedy answer")

    r = greedy(client, first, logprobs=True, top_logprobs=2)
    entries = r.choices[0].logprobs.content
    assert r.choices[0].message.content == expected[first], r
    assert len(entries) == r.usage.completion_tokens, (len(entries), r.usage)
    assert b"".join(bytes(e.bytes) for e in entries).decode() == expected[first], entries
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == 2 and e.top_logprobs[0].token == e.token, e
    r = client.completions.create(model="qwen", prompt="def fib(n):", max_tokens=4, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.token_logprobs) == 4, lp
    assert all(len(t) == 3 for t in lp.top_logprobs), lp
    print("ok: chat and completion log-probabilities parse as the client's types")

    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    question = [{"role": "user", "content": "What's the weather like in Paris today?"}]
    r = client.chat.completions.create(model="qwen", messages=question, tools=[weather], temperature=0, max_tokens=60)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather", r
    assert json.loads(call.function.arguments) == {"city": "Paris"}, call
    streamed = client.chat.completions.create(
        model="qwen", messages=question, tools=[weather], temperature=0, max_tokens=60, stream=True
    )
    deltas = [d for c in streamed if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert [(d.index, d.function.name, d.function.arguments) for d in deltas] == [(0, "get_weather", call.function.arguments)], deltas
    follow = question + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18}'},
    ]
    r = client.chat.completions.create(model="qwen", messages=follow, tools=[weather], temperature=0, max_tokens=8)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls"), r
    print("ok: a function call, streamed and not, and the turn after it, through the client's types")

    from pydantic import BaseModel

    class Cat(BaseModel):
        name: str
        age: int

    # Structured outputs the client's way: a pydantic model as `response_format` (a strict JSON
    # schema on the wire), the answer parsed back into it.
    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    r = parse(
        model="qwen",
        messages=[{"role": "user", "content": "Describe a cat."}],
        response_format=Cat,
        temperature=0,
        max_tokens=60,
    )
    cat = r.choices[0].message.parsed
    assert isinstance(cat, Cat) and r.choices[0].finish_reason == "stop", r
    r = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "Hello!"}],
        tools=[weather],
        tool_choice="required",
        temperature=0,
        max_tokens=60,
    )
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather", r
    assert isinstance(json.loads(call.function.arguments)["city"], str), r
    print(f"ok: structured outputs (a pydantic model through parse: {cat!r}) and a forced function call")

    jobs = [(messages[i % len(messages)], i % 2 == 0) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda j: (chat_stream if j[1] else chat)(client, j[0]), jobs))
    for (message, _), answer in zip(jobs, answers):
        assert answer == expected[message], (message, answer)
    print("ok: 8 concurrent clients")

    stream = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "Write a very long story about a dragon."}],
        max_tokens=2000,
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    got = chat(client, first)
    assert got == expected[first], got
    print("ok: a client that left mid-stream did not block the next request")

    for bad in ([], [{"role": "wizard", "content": "x"}]):
        try:
            client.chat.completions.create(model="qwen", messages=bad, max_tokens=4)
            raise AssertionError(f"{bad} was accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.body and e.body.get("message"), e
    with urllib.request.urlopen(base + "/health") as r:
        assert r.status == 200
    print("ok: bad input is a 400 (BadRequestError) and /health still answers 200")


if __name__ == "__main__":
    main()
