"""Pattern 8: capability registration and discovery through public mailboxes.

Each agent registers a public mailbox named after its capability (`cap.{skill}.{agent}`) with a
description. A client that needs a skill reads `$mq9.AI.PUBLIC.LIST`, picks a matching agent
and sends the task straight to its mailbox. New registrations can be watched live by
subscribing to the same subject.
"""

import asyncio
import json

from mq9 import connect, create, request, send, servers_from_argv


async def agent(servers, name, skill, desc):
    nc = await connect(servers)
    box = await create(nc, public=True, name=f"cap.{skill}.{name}", desc=desc, ttl=3600)
    print(f"{name}: registered {box}", flush=True)
    return nc, box


async def main(servers):
    agents = [await agent(servers, "deepl7", "translate", "translate en<->fr,de"),
              await agent(servers, "ocr2", "ocr", "text from scanned PDFs")]

    nc = await connect(servers, first=1)
    listing = await request(nc, "$mq9.AI.PUBLIC.LIST")
    translators = [m for m in listing["mailboxes"] if m["mail_address"].startswith("cap.translate.")]
    chosen = translators[0]["mail_address"]
    print(f"client: found {chosen} ({translators[0]['desc']})", flush=True)
    await send(nc, chosen, {"translate": "bonjour", "to": "en"})

    agent_nc, box = agents[0]
    task = await (await agent_nc.subscribe(f"$mq9.AI.MAILBOX.{box}.*")).next_msg(timeout=10)
    print(f"deepl7: got task {json.loads(task.data)}", flush=True)
    for connection, _ in agents:
        await connection.close()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(servers_from_argv()))
