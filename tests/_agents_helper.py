"""A real `Runner.run` of the OpenAI Agents SDK with a scripted model (no network), for the integration tests,
in-process or as a second process: `python _agents_helper.py run FOLDER SESSION TEXT` prints, as JSON, what the
model received and the final output; `python _agents_helper.py write FOLDER SESSION TAG N` adds N two-item turns.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

os.environ.setdefault("OPENAI_API_KEY", "sk-not-a-real-key")  # never used: the model below makes no request

from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from conversation_codec.integrations.openai_agents import CodecSession
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

set_tracing_disabled(True)


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class ScriptedModel(Model):
    """Asks for the weather tool after a user message, then answers with the tool's output; records its inputs."""

    def __init__(self) -> None:
        self.inputs: list[list[Any]] = []

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        self.inputs.append(json.loads(json.dumps(items)))
        last = items[-1]
        n = len(self.inputs)
        output: list[Any]
        if last.get("type") == "function_call_output":
            text = f"It is {last['output']}."
            output = [
                ResponseOutputMessage(
                    id=f"msg_{n}",
                    type="message",
                    role="assistant",
                    status="completed",
                    content=[ResponseOutputText(text=text, type="output_text", annotations=[])],
                )
            ]
        else:
            args = json.dumps({"city": last["content"]})
            output = [
                ResponseFunctionToolCall(
                    id=f"fc_{n}", call_id=f"call_{n}", type="function_call", name="weather", arguments=args
                )
            ]
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the tests run without streaming")


async def run(session: CodecSession, text: str) -> dict[str, Any]:
    model = ScriptedModel()
    agent = Agent(name="forecaster", instructions="Answer with the weather.", model=model, tools=[weather])
    result = await Runner.run(agent, text, session=session)
    return {"inputs": model.inputs, "final": result.final_output}


async def write(session: CodecSession, tag: str, n: int) -> None:
    for i in range(n):
        await session.add_items(
            [
                {"type": "function_call", "call_id": f"{tag}-{i}", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": f"{tag}-{i}", "output": tag},
            ]
        )


if __name__ == "__main__":
    command, folder, session_id, arg = sys.argv[1:5]
    session = CodecSession(session_id, folder)
    if command == "run":
        print(json.dumps(asyncio.run(run(session, arg))))
    else:
        asyncio.run(write(session, arg, int(sys.argv[5])))
