"""file_search end to end: the "financial statements" walk-through of OpenAI's guide, run against the
server with documents the test writes itself (vector stores live at `client.vector_stores` in current
SDKs), plus the tool's step details, citations and attachments."""

from __future__ import annotations

import io

import pytest
from openai import AssistantEventHandler
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas
from typing_extensions import override

from tests.conftest import sdk

FILLER = (
    "The company designs, manufactures and markets devices and accessories, and sells a variety of related "
    "services. Net sales by category and segment are discussed in the notes to the financial statements."
)


def pdf_bytes(pages: list[list[str]]) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    for lines in pages:
        y = 800
        for line in lines:
            pdf.drawString(40, y, line)
            y -= 16
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def aapl_10k() -> bytes:
    return pdf_bytes(
        [
            ["Apple Inc. Form 10-K", FILLER[:90], FILLER[90:]],
            [
                "Security ownership and shares outstanding.",
                "15,552,752,000 shares of common stock were issued and outstanding",
                "as of October 20, 2023.",
            ],
        ]
    )


def goog_10k() -> bytes:
    return pdf_bytes([["Alphabet Inc. Form 10-K", "Google Services revenues were 272.5 billion dollars in 2023."]])


BRKA_10K = (
    b"Berkshire Hathaway Inc. annual report.\n\nBerkshire's operating earnings were 37.4 billion dollars in 2023.\n"
)


class CitationPrinter(AssistantEventHandler):
    """The guide's handler, recording instead of printing."""

    def __init__(self, client):
        super().__init__()
        self.client = client
        self.tool_types: list[str] = []
        self.texts: list[str] = []
        self.citations: list[str] = []

    @override
    def on_tool_call_created(self, tool_call):
        self.tool_types.append(tool_call.type)

    @override
    def on_message_done(self, message) -> None:
        message_content = message.content[0].text
        annotations = message_content.annotations
        for index, annotation in enumerate(annotations):
            message_content.value = message_content.value.replace(annotation.text, f"[{index}]")
            if file_citation := getattr(annotation, "file_citation", None):
                cited_file = self.client.files.retrieve(file_citation.file_id)
                self.citations.append(f"[{index}] {cited_file.filename}")
        self.texts.append(message_content.value)


def test_financial_statements_walkthrough(server, scripted, model_name):
    client = sdk(server.url)
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "file_search", "arguments": {"query": "AAPL shares outstanding October 2023"}}]},
            {"content": "Apple had 15,552,752,000 shares outstanding as of October 20, 2023【0:0†aapl-10k.pdf】."},
        ],
    )
    assistant = client.beta.assistants.create(
        name="Financial Analyst Assistant",
        instructions="You are an expert financial analyst. Use your knowledge base to answer questions about audited financial statements.",
        model=model_name,
        tools=[{"type": "file_search"}],
    )
    vector_store = client.vector_stores.create(name="Financial Statements")
    file_streams = [("goog-10k.pdf", goog_10k()), ("brka-10k.txt", BRKA_10K)]
    file_batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=vector_store.id, files=file_streams
    )
    assert file_batch.status == "completed"
    assert file_batch.file_counts.completed == 2 and file_batch.file_counts.in_progress == 0

    assistant = client.beta.assistants.update(
        assistant_id=assistant.id,
        tool_resources={"file_search": {"vector_store_ids": [vector_store.id]}},
    )
    message_file = client.files.create(file=("aapl-10k.pdf", aapl_10k()), purpose="assistants")
    thread = client.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": "How many shares of AAPL were outstanding at the end of of October 2023?",
                "attachments": [{"file_id": message_file.id, "tools": [{"type": "file_search"}]}],
            }
        ]
    )
    thread_stores = thread.tool_resources.file_search.vector_store_ids
    assert len(thread_stores) == 1 and thread_stores[0] != vector_store.id
    thread_store = client.vector_stores.retrieve(thread_stores[0])
    assert thread_store.expires_after.anchor == "last_active_at" and thread_store.expires_after.days == 7

    handler = CitationPrinter(client)
    with client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        instructions="Please address the user as Jane Doe. The user has a premium account.",
        event_handler=handler,
    ) as stream:
        stream.until_done()
        run = stream.get_final_run()

    assert run.status == "completed", run.last_error
    assert handler.tool_types == ["file_search"]
    assert handler.texts == ["Apple had 15,552,752,000 shares outstanding as of October 20, 2023[0]."]
    assert handler.citations == ["[0] aapl-10k.pdf"]

    # The model received the passage from the attached file, found by the tool across both stores.
    tool_result = scripted.requests(model_name)[1]["body"]["messages"][-1]
    assert tool_result["role"] == "tool" and "15,552,752,000" in tool_result["content"]

    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    (call,) = steps[0].step_details.tool_calls
    assert call.type == "file_search"
    results = call.file_search.results
    assert results[0].file_id == message_file.id and results[0].file_name == "aapl-10k.pdf"
    assert 0 <= results[0].score <= 1
    # Chunk content only on request.
    assert all(r.content is None for r in results)
    with_content = client.beta.threads.runs.steps.retrieve(
        steps[0].id,
        thread_id=thread.id,
        run_id=run.id,
        include=["step_details.tool_calls[*].file_search.results[*].content"],
    )
    assert "15,552,752,000" in with_content.step_details.tool_calls[0].file_search.results[0].content[0].text

    message = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    (annotation,) = message.content[0].text.annotations
    text = message.content[0].text.value
    assert text[annotation.start_index : annotation.end_index] == annotation.text == "【0:0†aapl-10k.pdf】"
    assert annotation.file_citation.file_id == message_file.id


def test_without_files_the_tool_is_not_offered(server, scripted, model_name):
    client = sdk(server.url)
    scripted.script(model_name, [{"content": "I have no files to search."}])
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "file_search"}])
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hi"}]}, poll_interval_ms=20
    )
    assert run.status == "completed"
    assert "tools" not in scripted.requests(model_name)[0]["body"]


def test_code_interpreter_attachment_is_recorded(server, model_name):
    client = sdk(server.url)
    data_file = client.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="assistants")
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content="analyse this",
        attachments=[{"file_id": data_file.id, "tools": [{"type": "code_interpreter"}]}],
    )
    assert message.attachments[0].file_id == data_file.id
    thread = client.beta.threads.retrieve(thread.id)
    assert thread.tool_resources.code_interpreter.file_ids == [data_file.id]


def test_attachment_of_unknown_file_is_404(server):
    client = sdk(server.url)
    thread = client.beta.threads.create()
    import openai

    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.create(
            thread_id=thread.id,
            role="user",
            content="x",
            attachments=[{"file_id": "file-doesnotexist000000000000", "tools": [{"type": "file_search"}]}],
        )


def test_vector_stores_helper_on_assistant_and_thread_create(server, scripted, model_name):
    client = sdk(server.url)
    kb = client.files.create(file=("kb.md", b"# Policy\n\nRefunds are accepted within 45 days of purchase.\n"), purpose="assistants")
    assistant = client.beta.assistants.create(
        model=model_name,
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_stores": [{"file_ids": [kb.id], "metadata": {"kind": "kb"}}]}},
    )
    (store_id,) = assistant.tool_resources.file_search.vector_store_ids
    store = client.vector_stores.retrieve(store_id)
    assert store.metadata == {"kind": "kb"} and store.expires_after is None
    notes = client.files.create(file=("notes.txt", b"The customer asked about refunds on 3 May."), purpose="assistants")
    thread = client.beta.threads.create(
        tool_resources={"file_search": {"vector_stores": [{"file_ids": [notes.id]}]}}
    )
    (thread_store_id,) = thread.tool_resources.file_search.vector_store_ids
    thread_store = client.vector_stores.retrieve(thread_store_id)
    assert thread_store.expires_after.days == 7
    # The run waits for the thread's files only (as OpenAI does): the assistant's are awaited here.
    client.vector_stores.files.poll(kb.id, vector_store_id=store_id)
    scripted.script(
        model_name,
        [{"tool_calls": [{"name": "file_search", "arguments": {"query": "refund window days"}}]}, {"content": "45 days."}],
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "completed"
    tool_output = scripted.requests(model_name)[1]["body"]["messages"][-1]["content"]
    assert "45 days" in tool_output


def test_tool_resources_must_reference_existing_objects(server, model_name):
    import openai

    client = sdk(server.url)
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.create(
            model=model_name, tool_resources={"file_search": {"vector_store_ids": ["vs_doesnotexist0000000000"]}}
        )
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.create(tool_resources={"code_interpreter": {"file_ids": ["file-doesnotexist0000000000"]}})
    store = client.vector_stores.create(name="one")
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.create(
            tool_resources={"file_search": {"vector_store_ids": [store.id], "vector_stores": [{"file_ids": []}]}}
        )
