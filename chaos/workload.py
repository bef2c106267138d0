"""The chaos workload: real NATS clients doing mailbox work through random nodes, recorded.

Runs in the client namespace (see ``net.py``). Every process is one nats-py connection doing
one operation at a time, so a completion always belongs to its process's last invoke:

- producers (``p*``): acknowledged sends of unique ids (the payload) with random priorities to
  random mailboxes, through random nodes, many processes in flight at once;
- creator (``c``): creates private mailboxes during the run; producers use the acknowledged ones;
- deleter (``d``): deletes random acknowledged messages (dialect 2 ``DELETE.{A}.{msg_id}``);
- replayers (``r*``): connect to a random node, subscribe to a mailbox and record the replay;
- workers (``w*``): a queue group on the public mailbox ``chaos.jobs``, hopping between nodes.

After the faults are healed, ``final_read`` reads every known mailbox on every node. A reply
``{"error": "mailbox ... does not exist"}`` (the apply result) is a definite ``fail``; every
other error, a time-out or a lost connection is ``info``: the operation may have committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client

from chaos.history import Entry, Recorder

log = logging.getLogger("chaos.workload")

PRIORITIES = ("critical", "urgent", "normal", "low")
JOBS = "chaos.jobs"
QUEUE = "workers"


@dataclass(frozen=True)
class WorkloadConfig:
    producers: int = 12  # producer processes (connections), each with one send in flight
    send_rate: float = 120.0  # sends per second, all producers together
    initial_mailboxes: int = 3
    create_every: float = 3.0
    delete_every: float = 0.5
    replayers: int = 2
    replay_every: float = 1.0
    replay_quiet: float = 1.5  # a replay ends after this long without a message
    replay_max: float = 8.0
    workers: int = 3
    work_for: tuple[float, float] = (3.0, 8.0)  # a worker stays on one node this long
    jobs_share: float = 0.2  # share of sends to the queue group's public mailbox
    mailbox_ttl: int = 600  # some mailboxes expire, though never within a run by a true clock
    request_timeout: float = 12.0  # beyond the broker's 10 s retry budget
    connect_timeout: float = 1.0


def delivery(msg: Any) -> list[Any]:
    """``[msg_id, priority, uid]`` of a dialect-1 delivery."""
    headers = msg.headers or {}
    return [int(headers.get("mq9-msg-id", -1)), headers.get("mq9-priority", "?"), msg.data.decode(errors="replace")]


class Workload:
    """All client processes of one run; ``urls`` maps node name to its NATS URL."""

    def __init__(self, recorder: Recorder, urls: dict[str, str], rng: random.Random,
                 config: WorkloadConfig = WorkloadConfig()) -> None:
        self.rec = recorder
        self.urls = urls
        self.rng = rng
        self.cfg = config
        self.mailboxes: list[str] = []  # acknowledged creates (not JOBS)
        self.acked: list[tuple[str, int, str]] = []  # (mailbox, msg_id, uid) of acknowledged sends
        self._public: set[str] = set()  # acknowledged public creates (JOBS)
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # -- connections -------------------------------------------------------------------------

    def pick_node(self) -> str:
        return self.rng.choice(sorted(self.urls))

    async def connect(self, node: str) -> Client | None:
        connecting = nats.connect(self.urls[node], allow_reconnect=False, connect_timeout=self.cfg.connect_timeout,
                                  max_reconnect_attempts=0, ping_interval=5, max_outstanding_pings=2,
                                  error_cb=_ignore)
        try:  # nats-py's own connect_timeout does not bound every way a connect can hang
            return await asyncio.wait_for(connecting, 3 * self.cfg.connect_timeout)
        except Exception:  # noqa: BLE001 - any failure to connect: try another node later
            return None

    async def request(self, nc: Client | None, invoked: Entry, subject: str, body: bytes,
                      judge: Callable[[dict], tuple[str, dict]]) -> tuple[str, dict]:
        """Send one request and record its completion; (type, value)."""
        if nc is None or not nc.is_connected:
            return "info", self.rec.complete(invoked, "info", {"error": "not connected"})["value"]
        try:
            reply = await nc.request(subject, body, timeout=self.cfg.request_timeout)
            answer = json.loads(reply.data)
        except Exception as exc:  # noqa: BLE001 - time-out, lost connection: unknown outcome
            return "info", self.rec.complete(invoked, "info", {"error": f"{type(exc).__name__}: {exc}"})["value"]
        type_, value = judge(answer)
        return type_, self.rec.complete(invoked, type_, value)["value"]

    # -- set-up and the run ------------------------------------------------------------------

    async def setup(self, timeout: float = 30.0) -> None:
        """Create the first mailboxes and the queue group's public mailbox (retrying)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.mailboxes) < self.cfg.initial_mailboxes or JOBS not in self._public:
            if loop.time() > deadline:
                raise RuntimeError("the cluster took no mailbox creates during set-up")
            public = len(self.mailboxes) >= self.cfg.initial_mailboxes
            await self.create("setup", public=public)
            await asyncio.sleep(0.1)

    async def create(self, process: str, public: bool = False) -> None:
        node = self.pick_node()
        ttl = 0 if public or self.rng.random() < 0.6 else self.cfg.mailbox_ttl
        body = {"public": True, "name": JOBS} if public else {"ttl": ttl}
        invoked = self.rec.invoke(process, "create", node, {"public": public, "ttl": ttl})
        nc = await self.connect(node)
        try:
            type_, value = await self.request(nc, invoked, "$mq9.AI.MAILBOX.CREATE", json.dumps(body).encode(),
                                              _judge_create)
        finally:
            if nc is not None:
                await close(nc)
        if type_ == "ok":
            if public:
                self._public = {*self._public, value["mailbox"]}
            else:
                self.mailboxes.append(value["mailbox"])

    def start(self) -> None:
        self.rec.add("info", "workload", "start")
        cfg = self.cfg
        tasks = [self._producer(f"p{i}") for i in range(cfg.producers)]
        tasks += [self._replayer(f"r{i}") for i in range(cfg.replayers)]
        tasks += [self._worker(f"w{i}") for i in range(cfg.workers)]
        tasks += [self._creator("c"), self._deleter("d")]
        self._tasks = [asyncio.ensure_future(task) for task in tasks]

    async def stop(self) -> None:
        """No new operations; wait for those in flight to complete."""
        self.stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.rec.add("info", "workload", "stop")

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless the run stops first; True if it should go on."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return False
        except asyncio.TimeoutError:
            return True

    # -- processes ---------------------------------------------------------------------------

    async def _producer(self, process: str) -> None:
        per_process = self.cfg.send_rate / self.cfg.producers
        seq = 0
        nc, node, left = None, "", 0
        try:
            while await self._pause(self.rng.expovariate(per_process)):
                if nc is None or not nc.is_connected or left <= 0:
                    if nc is not None:
                        await close(nc)
                    node, left = self.pick_node(), self.rng.randint(20, 200)
                    nc = await self.connect(node)
                left -= 1
                seq += 1
                jobs = JOBS in self._public and self.rng.random() < self.cfg.jobs_share
                mailbox = JOBS if jobs else self.rng.choice(self.mailboxes)
                priority = self.rng.choice(PRIORITIES)
                uid = f"{process}-{seq}"
                invoked = self.rec.invoke(process, "send", node, {"mailbox": mailbox, "priority": priority, "uid": uid})
                suffix = "" if priority == "normal" and self.rng.random() < 0.5 else f".{priority}"
                type_, value = await self.request(nc, invoked, f"$mq9.AI.MAILBOX.{mailbox}{suffix}", uid.encode(),
                                                  _judge_send)
                if type_ == "ok" and mailbox != JOBS:
                    self.acked.append((mailbox, value["msg_id"], uid))
        finally:
            if nc is not None:
                await close(nc)

    async def _creator(self, process: str) -> None:
        while await self._pause(self.cfg.create_every):
            await self.create(process)

    async def _deleter(self, process: str) -> None:
        deleted: set[str] = set()
        while await self._pause(self.cfg.delete_every):
            candidates = [a for a in self.acked[-500:] if a[2] not in deleted]
            if not candidates:
                continue
            mailbox, msg_id, uid = self.rng.choice(candidates)
            deleted.add(uid)
            node = self.pick_node()
            invoked = self.rec.invoke(process, "delete", node, {"mailbox": mailbox, "msg_id": msg_id, "uid": uid})
            nc = await self.connect(node)
            try:
                await self.request(nc, invoked, f"$mq9.AI.MAILBOX.DELETE.{mailbox}.{msg_id}", b"", _judge_delete)
            finally:
                if nc is not None:
                    await close(nc)

    async def _replayer(self, process: str) -> None:
        while await self._pause(self.rng.uniform(0.5, 1.5) * self.cfg.replay_every):
            node = self.pick_node()
            mailbox = self.rng.choice(self.mailboxes)
            invoked = self.rec.invoke(process, "replay", node, {"mailbox": mailbox})
            got, complete, error = await self.collect(node, f"$mq9.AI.MAILBOX.{mailbox}.*", None,
                                                      self.cfg.replay_quiet, self.cfg.replay_max)
            if error is not None:
                self.rec.complete(invoked, "info", {"error": error, "deliveries": got})
            else:
                self.rec.complete(invoked, "ok", {"deliveries": got, "complete": complete})

    async def _worker(self, process: str) -> None:
        while not self.stopping.is_set():
            node = self.pick_node()
            invoked = self.rec.invoke(process, "work", node, {"mailbox": JOBS})
            stay = self.rng.uniform(*self.cfg.work_for)
            got, _, error = await self.collect(node, f"$mq9.AI.MAILBOX.{JOBS}.*", QUEUE, None, stay)
            # deliveries are facts whatever happened to the connection afterwards
            self.rec.complete(invoked, "ok", {"deliveries": got, "error": error})
            if error is not None:
                await self._pause(0.2)

    async def collect(self, node: str, subject: str, queue: str | None, quiet: float | None,
                      limit: float) -> tuple[list[list[Any]], bool, str | None]:
        """Subscribe on ``node`` and record deliveries until ``quiet`` s without one or ``limit`` s.

        Returns (deliveries, ended by quiet, error). The run stopping ends a collection too.
        """
        nc = await self.connect(node)
        if nc is None:
            return [], False, "not connected"
        got: list[list[Any]] = []
        last = [asyncio.get_running_loop().time()]

        async def on_message(msg: Any) -> None:
            got.append(delivery(msg))
            last[0] = asyncio.get_running_loop().time()

        loop = asyncio.get_running_loop()
        begin = loop.time()
        error = None
        quietly = False
        try:
            sub = await nc.subscribe(subject, queue=queue or "", cb=on_message)
            while True:
                await asyncio.sleep(0.1)
                now = loop.time()
                if not nc.is_connected:
                    error = "connection lost"
                    break
                if quiet is not None and now - last[0] >= quiet:
                    quietly = True
                    break
                if now - begin >= limit or (queue is not None and self.stopping.is_set()):
                    break
            if nc.is_connected:
                await sub.unsubscribe()
        except Exception as exc:  # noqa: BLE001
            error = f"{type(exc).__name__}: {exc}"
        finally:
            await close(nc)
        return got, quietly, error

    # -- after the faults ----------------------------------------------------------------------

    async def final_read(self, node: str, timeout: float = 30.0) -> None:
        """Record every known mailbox's full replay on ``node`` (no writes are running now)."""
        invoked = self.rec.invoke("final", "final-read", node, {})
        boxes = [*self.mailboxes, *sorted(self._public)]
        state: dict[str, list[list[Any]]] = {}
        nc = await self.connect(node)
        if nc is None:
            self.rec.complete(invoked, "info", {"error": "not connected"})
            return
        try:
            for box in boxes:
                listing = await nc.request(f"$mq9.AI.MAILBOX.LIST.{box}", b"", timeout=timeout)
                answer = json.loads(listing.data)
                if "error" in answer:
                    if "does not exist" in answer["error"]:
                        continue
                    raise RuntimeError(f"LIST {box}: {answer['error']}")
                want = len(answer["messages"])
                got: list[list[Any]] = []
                done = asyncio.Event()

                async def on_message(msg: Any, got=got, want=want, done=done) -> None:
                    got.append(delivery(msg))
                    if len(got) >= want:
                        done.set()

                sub = await nc.subscribe(f"$mq9.AI.MAILBOX.{box}.*", cb=on_message)
                if want:
                    await asyncio.wait_for(done.wait(), timeout)
                await asyncio.sleep(0.2)  # a duplicate would show up now
                await sub.unsubscribe()
                state[box] = list(got)
        except Exception as exc:  # noqa: BLE001
            self.rec.complete(invoked, "info", {"error": f"{type(exc).__name__}: {exc}"})
            return
        finally:
            await close(nc)
        self.rec.complete(invoked, "ok", {"mailboxes": state})


async def close(nc: Client) -> None:
    """Close a connection; a node that stopped answering must not hold the workload up."""
    try:
        await asyncio.wait_for(nc.close(), 2.0)
    except Exception:  # noqa: BLE001 - time-out or a connection already broken: it is gone either way
        pass


async def _ignore(error: Exception) -> None:
    """nats-py's error callback: failures are recorded by the operation that saw them."""


def _definite(error: str) -> bool:
    """Errors that say the operation was not applied: the state machine's own answer, or the
    broker's "not committed: ..." (it knows the entry is not in the log; "outcome unknown" is
    its word for a time-out or a lost leader, which may still commit)."""
    return "does not exist" in error or error.startswith("not committed:")


def _judge_send(answer: dict) -> tuple[str, dict]:
    if "msg_id" in answer:
        return "ok", {"msg_id": answer["msg_id"]}
    error = str(answer.get("error"))
    return ("fail" if _definite(error) else "info"), {"error": error}


def _judge_create(answer: dict) -> tuple[str, dict]:
    if "mail_address" in answer:
        return "ok", {"mailbox": answer["mail_address"]}
    error = str(answer.get("error"))
    return ("fail" if error.startswith("not committed:") else "info"), {"error": error}


def _judge_delete(answer: dict) -> tuple[str, dict]:
    if answer.get("deleted"):
        return "ok", {}
    error = str(answer.get("error"))
    return ("fail" if _definite(error) else "info"), {"error": error}
