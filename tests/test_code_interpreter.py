"""code_interpreter through the SDK: the seed's math tutor (polling and streaming, with its event
handler unchanged), state kept across runs of a thread, a CSV read with pandas into a chart and a
CSV written back, and code that misbehaves or tries to get out — against the real sandbox, with the
scripted model writing the code."""

from __future__ import annotations

import io
import json

import httpx
import psycopg
import pytest
from openai import AssistantEventHandler
from typing_extensions import override

from tests.conftest import sdk
from tests.test_crashes import Cluster
from tests.test_streaming import BETA

MATH_CODE = "x = (14 - 11) / 3\nprint(f'x = {x}')"


def code_call(code: str, **turn) -> dict:
    return {"tool_calls": [{"name": "code_interpreter", "arguments": {"code": code}}], **turn}


def tutor(client, model_name: str):
    """The seed's math tutor, as written there (with the scripted model)."""
    assistant = client.beta.assistants.create(
        name="数学教師",
        instructions="数学の質問に答えるために、コードを書いて実行してください。",
        tools=[{"type": "code_interpreter"}],
        model=model_name,
    )
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="方程式 `3x + 11 = 14` を解いてほしいです。手伝ってもらえますか?"
    )
    return assistant, thread


def test_math_tutor_polling(client, scripted, model_name):
    scripted.script(model_name, [code_call(MATH_CODE), {"content": "方程式の解は x = 1 です。"}])
    assistant, thread = tutor(client, model_name)
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        instructions="ユーザーを佐藤太郎として扱ってください。ユーザーはプレミアムアカウントを持っています。",
    )
    assert run.status == "completed", run.last_error
    printed = []
    for message in client.beta.threads.messages.list(thread_id=thread.id):
        prefix = "ユーザー: " if message.role == "user" else "アシスタント: "
        printed.append(prefix + message.content[0].text.value)
    assert printed[0] == "アシスタント: 方程式の解は x = 1 です。"
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
    (call,) = steps[0].step_details.tool_calls
    assert call.type == "code_interpreter"
    assert call.code_interpreter.input == MATH_CODE
    assert [(o.type, o.logs) for o in call.code_interpreter.outputs] == [("logs", "x = 1.0")]
    # The model read the result, and was offered the tool under its own name.
    first, second = scripted.requests(model_name)
    assert [t["function"]["name"] for t in first["body"]["tools"]] == ["code_interpreter"]
    (result,) = [m for m in second["body"]["messages"] if m["role"] == "tool"]
    assert result["content"] == "x = 1.0"


def test_math_tutor_streaming_with_the_seeds_event_handler(client, scripted, model_name):
    scripted.script(model_name, [code_call(MATH_CODE, chunk_size=5), {"content": "x = 1 です。", "chunk_size": 3}])
    assistant, thread = tutor(client, model_name)
    out = io.StringIO()

    def print_(*args, end="\n", flush=False):
        out.write(" ".join(str(a) for a in args) + end)

    class EventHandler(AssistantEventHandler):  # the seed's handler, printing into `out`
        @override
        def on_text_created(self, text) -> None:
            print_("\nassistant > ", end="", flush=True)

        @override
        def on_text_delta(self, delta, snapshot):
            print_(delta.value, end="", flush=True)

        def on_tool_call_created(self, tool_call):
            print_(f"\nassistant > {tool_call.type}\n", flush=True)

        def on_tool_call_delta(self, delta, snapshot):
            if delta.type == "code_interpreter":
                if delta.code_interpreter.input:
                    print_(delta.code_interpreter.input, end="", flush=True)
                if delta.code_interpreter.outputs:
                    print_("\n\noutput >", flush=True)
                    for output in delta.code_interpreter.outputs:
                        if output.type == "logs":
                            print_(f"\n{output.logs}", flush=True)

    with client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        instructions="ユーザーを佐藤太郎として扱ってください。ユーザーはプレミアムアカウントを持っています。",
        event_handler=EventHandler(),
    ) as stream:
        stream.until_done()
    assert out.getvalue() == (
        f"\nassistant > code_interpreter\n\n{MATH_CODE}\n\noutput >\n\nx = 1.0\n\nassistant > x = 1 です。"
    )
    assert stream.get_final_run().status == "completed"


def test_state_is_kept_across_runs_of_a_thread(client, scripted, model_name):
    scripted.script(
        model_name,
        [
            code_call("import math\nsecret = 41"),
            {"content": "Stored."},
            code_call("print(secret + 1, math.floor(2.5))"),
            {"content": "42."},
        ],
    )
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "remember 41"}])
    for _ in range(2):
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        assert run.status == "completed", run.last_error
        if _ == 0:
            client.beta.threads.messages.create(thread_id=thread.id, role="user", content="and now?")
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
    assert steps[0].step_details.tool_calls[0].code_interpreter.outputs[0].logs == "42 2"


CSV = "month,sales\njan,10\nfeb,20\nmar,30\n"
CHART_CODE = """
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv('/mnt/data/sales.csv')
df.plot(x='month', y='sales')
plt.show()
df['double'] = df['sales'] * 2
df.to_csv('/mnt/data/doubled.csv', index=False)
print(df['sales'].sum())
"""


def test_a_csv_becomes_a_chart_and_a_new_csv(client, server, scripted, model_name):
    answer = "Total sales: 60. The doubled table: [doubled.csv](sandbox:/mnt/data/doubled.csv)"
    scripted.script(model_name, [code_call(CHART_CODE), {"content": answer}])
    uploaded = client.files.create(file=("sales.csv", CSV.encode()), purpose="assistants")
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": "Chart my sales and double them.",
                "attachments": [{"file_id": uploaded.id, "tools": [{"type": "code_interpreter"}]}],
            }
        ]
    )
    assert client.beta.threads.retrieve(thread.id).tool_resources.code_interpreter.file_ids == [uploaded.id]
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    # The model was told where the file is.
    first = scripted.requests(model_name)[0]
    assert "/mnt/data/sales.csv" in first["body"]["tools"][0]["function"]["description"]

    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
    outputs = steps[0].step_details.tool_calls[0].code_interpreter.outputs
    assert [o.type for o in outputs] == ["logs", "image"]
    assert outputs[0].logs == "60"
    image_id = outputs[1].image.file_id

    (message,) = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    text, image = message.content
    assert text.text.value == answer
    (annotation,) = text.text.annotations
    assert annotation.type == "file_path" and annotation.text == "sandbox:/mnt/data/doubled.csv"
    assert answer[annotation.start_index : annotation.end_index] == annotation.text
    assert image.type == "image_file" and image.image_file.file_id == image_id

    png = client.files.content(image_id).read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    doubled = client.files.content(annotation.file_path.file_id).read().decode()
    assert doubled.splitlines() == ["month,sales,double", "jan,10,20", "feb,20,40", "mar,30,60"]
    made = {f.id: f for f in client.files.list(purpose="assistants_output")}
    assert made[annotation.file_path.file_id].filename == "doubled.csv"
    assert made[image_id].bytes == len(png)


AGG_FIGURE = "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"


@pytest.mark.parametrize(
    "code",
    ["import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()", AGG_FIGURE],
    ids=["inline backend", "Agg backend"],
)
def test_streamed_outputs_reach_the_message_as_image_parts(client, server, scripted, model_name, code):
    scripted.script(model_name, [code_call(code), {"content": "Here it is."}])
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "plot"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        stream.until_done()
    (message,) = stream.get_final_messages()
    assert [part.type for part in message.content] == ["text", "image_file"]
    (step,) = [s for s in stream.get_final_run_steps() if s.type == "tool_calls"]
    assert step.step_details.tool_calls[0].code_interpreter.outputs[0].image.file_id == message.content[1].image_file.file_id


def test_forcing_code_interpreter_forces_it_once(client, scripted, model_name):
    scripted.script(model_name, [code_call("print(2 ** 10)"), {"content": "1024"}])
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "2^10?"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tool_choice={"type": "code_interpreter"}
    )
    assert run.status == "completed", run.last_error
    first, second = scripted.requests(model_name)
    assert first["body"]["tool_choice"] == {"type": "function", "function": {"name": "code_interpreter"}}
    assert second["body"].get("tool_choice", "auto") == "auto"


def test_runaway_and_hostile_code_fails_inside_the_sandbox(client, server, scripted, model_name):
    probes = [
        ("while True:\n    pass", "time limit and was interrupted"),
        ("x = bytearray(8 * 1024 ** 3)", "MemoryError"),
        ("import socket\nsocket.create_connection(('127.0.0.1', 5432), timeout=2)", "Error"),
        ("print(open('/proc/1/environ', 'rb').read())", ""),
        # NULs and bytes that are not UTF-8 reach the step's logs escaped (Postgres refuses \u0000).
        ("import os\nprint(open('/proc/self/environ').read())\nos.write(1, bytes(range(256)))", "\\x00"),
        ("import os\nprint(sorted(k for k in os.environ if 'KEY' in k or 'DATABASE' in k))", "[]"),
    ]
    turns = []
    for code, _ in probes:
        turns += [code_call(code), {"content": "done"}]
    scripted.script(model_name, turns)
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "code_interpreter"}])
    for code, expected in probes:
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "try this"}])
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        assert run.status == "completed", run.last_error
        step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
        logs = "".join(o.logs for o in step.step_details.tool_calls[0].code_interpreter.outputs if o.type == "logs")
        assert expected in logs, (code, logs)
        assert "sk-test-model-key" not in logs and "postgresql" not in logs
    # The server is healthy after all of it.
    r = httpx.get(f"{server.url}/assistants", headers=BETA)
    assert r.status_code == 200 and json.loads(r.text)["object"] == "list"


def test_a_threads_session_is_found_by_another_worker_through_the_gateway(kernel_gateway, scripted, workdir, database_url, model_name):
    """Two workers share kernels through the gateway: the thread → kernel mapping is in Postgres, so
    the run on the second worker finds the variable and the file the first one left."""
    cluster = Cluster(scripted, workdir, database_url, "gateway")
    cluster.env.update(kernel_gateway)
    try:
        api = cluster.api()
        first = cluster.worker()
        scripted.script(
            model_name,
            [
                code_call("total = sum(range(10))\nopen('note.txt', 'w').write('kept')"),
                {"content": "Done."},
                code_call("print(total, open('note.txt').read())"),
                {"content": "45 kept"},
            ],
        )
        client = sdk(api.url)
        assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "code_interpreter"}])
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "add up"}])
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        assert run.status == "completed", run.last_error
        first.terminate()
        assert first.wait(30) == 0
        cluster.worker()
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="and?")
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        assert run.status == "completed", run.last_error
        step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
        assert step.step_details.tool_calls[0].code_interpreter.outputs[0].logs == "45 kept"
        with psycopg.connect(cluster.url) as conn:
            assert conn.execute("SELECT count(*) FROM code_interpreter_kernels WHERE key = %s", (thread.id,)).fetchone() == (1,)
    finally:
        cluster.stop()
