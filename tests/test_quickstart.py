"""The README's math-tutor example, unchanged but for the base URL."""

from tests.conftest import sdk


def test_math_tutor_example(server, scripted, model_name):
    client = sdk(server.url)
    scripted.script(model_name, [{"content": "x = 1. Subtract 11 from both sides, then divide by 3."}])
    assistant = client.beta.assistants.create(
        name="Math Tutor",
        instructions="You are a personal math tutor. Write and run code to answer math questions.",
        model=model_name,
    )
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="I need to solve the equation `3x + 11 = 14`. Can you help me?"
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        instructions="Please address the user as Jane Doe. The user has a premium account.",
    )
    assert run.status == "completed"
    messages = client.beta.threads.messages.list(thread_id=thread.id)
    assert [m.role for m in messages.data] == ["assistant", "user"]
    assert messages.data[0].content[0].text.value.startswith("x = 1.")
    sent = scripted.requests(model_name)[0]["body"]["messages"]
    # Run instructions replace the assistant's.
    assert sent[0] == {"role": "system", "content": "Please address the user as Jane Doe. The user has a premium account."}
    assert sent[-1]["content"].startswith("I need to solve")
