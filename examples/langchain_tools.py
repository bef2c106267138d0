"""LangChain: two agents coordinate through mq9 with the published `langchain-mq9` tools.

No LLM here: the script calls the tools exactly as an agent's tool calls would (name + JSON
arguments), so what the model would see is printed. Give an LLM agent the same tools with
`create_react_agent(llm, Mq9Toolkit(server=...).get_tools())`.

    pip install langchain-mq9==0.3.5
    python langchain_tools.py nats://127.0.0.1:4222
"""

import sys
import time

from langchain_mq9 import Mq9Toolkit

server = (sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222").split(",")[0]  # the SDK takes one URL
tools = {tool.name: tool for tool in Mq9Toolkit(server=server).get_tools()}


def call(tool, **args):
    """One tool call, as an agent makes it; the string result is what the model reads."""
    result = tools[tool].invoke(args)
    print(f"> {tool}({args})\n{result}\n", flush=True)
    return result


def wait_stored(mail_id, count):
    """send_message is a fire-and-forget publish: before reading, wait until the broker lists the messages."""
    while not tools["list_messages"].invoke({"mail_id": mail_id}).startswith(f"{count} message(s)"):
        time.sleep(0.1)


# The reviewer agent registers where work can reach it; the researcher gets a private inbox.
call("create_public_mailbox", name="agents.reviewer", desc="reviews drafts", ttl=3600)
researcher = call("create_mailbox", ttl=3600)

# The researcher hands over two drafts, one of them urgent, and says where to answer.
call("send_message", mail_id="agents.reviewer", content=f"review draft A, reply to {researcher}", priority="normal")
call("send_message", mail_id="agents.reviewer", content=f"review draft B today, reply to {researcher}", priority="high")

# The reviewer reads its mailbox (urgent first) and answers.
wait_stored("agents.reviewer", 2)
inbox = call("get_messages", mail_id="agents.reviewer")
assert "priority=high  content=review draft B today" in inbox.splitlines()[1]
call("send_message", mail_id=researcher, content="draft B: approved with two comments")

# The researcher reads the answer; the reviewer removes what it has handled.
wait_stored(researcher, 1)
assert "approved" in call("get_messages", mail_id=researcher)
listing = call("list_messages", mail_id="agents.reviewer")
for line in listing.splitlines()[1:]:
    call("delete_message", mail_id="agents.reviewer", msg_id=line.split()[0].removeprefix("msg_id="))
assert call("list_messages", mail_id="agents.reviewer") == "No messages in mailbox 'agents.reviewer'."
