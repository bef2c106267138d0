// nats.js driver for the interop suite: `node scenarios.mjs SCENARIO URL`.
// Exits 0 when the scenario's assertions hold; otherwise prints what failed and exits 1.
// The reconnect scenario prints "RESTART" and waits for a line on stdin once the server is back.
import { connect, headers, ErrorCode } from "nats";
import { createInterface } from "node:readline";

const [scenario, url] = process.argv.slice(2);
const enc = new TextEncoder();
const OPTS = { servers: url, reconnectTimeWait: 100, maxReconnectAttempts: -1, noRandomize: true };

class Failure extends Error {}

function check(cond, what) {
  if (!cond) throw new Failure(what);
}

function eq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  check(a === e, `${what}: expected ${e}, got ${a}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until pred() holds, polling; fails with `what` after `ms`. */
async function until(pred, what, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    check(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Subscribes with a callback that appends to the returned array (its `.sub` is the subscription). */
function collect(nc, subject, opts = {}) {
  const msgs = [];
  const callback = (err, m) => {
    if (err) {
      console.error(`${scenario} FAILED: subscription ${subject}: ${err.message}`);
      process.exit(1);
    }
    msgs.push(m);
  };
  msgs.sub = nc.subscribe(subject, { ...opts, callback });
  return msgs;
}

/** Waits until `msgs` holds `n` messages and returns them. */
async function take(msgs, n) {
  await until(() => msgs.length >= n, `${n} messages on ${msgs.sub.getSubject()} (got ${msgs.length})`);
  return msgs.slice(0, n);
}

const scenarios = {
  async connect() {
    const nc = await connect(OPTS);
    check(nc.info.max_payload > 0, `max_payload in INFO: ${nc.info.max_payload}`);
    check(nc.info.headers === true, "server INFO does not announce headers");
    eq(nc.getServer(), url.replace("nats://", ""), "connected server");
    const rtt = await nc.rtt();
    check(rtt >= 0, "rtt");
    await nc.close();
    check(nc.isClosed(), "connection not closed after close()");
  },

  async pubsub() {
    const nc = await connect(OPTS);
    const sub = collect(nc, "interop.pubsub");
    const big = new Uint8Array(64 * 1024).map((_, i) => i % 251);
    const payloads = [enc.encode("hello"), new Uint8Array(0), enc.encode("x\r\ny"), big];
    for (const p of payloads) nc.publish("interop.pubsub", p);
    const got = await take(sub, payloads.length);
    await nc.flush();
    eq(sub.length, payloads.length, "number of deliveries");
    got.forEach((m, i) => {
      eq(m.subject, "interop.pubsub", `subject of message ${i}`);
      check(Buffer.from(m.data).equals(Buffer.from(payloads[i])), `payload ${i} differs (len ${m.data.length})`);
    });
    await nc.close();
  },

  async wildcard() {
    const nc = await connect(OPTS);
    const star = collect(nc, "wc.*.x");
    const full = collect(nc, "wc.>");
    for (const s of ["wc.a.x", "wc.b.y", "wc.a.b.x", "wc", "wcx.a.x", "wc.z.x"]) {
      nc.publish(s, enc.encode(s));
    }
    // wc.z.x matches both and is published last: once it arrives, nothing else is due.
    await take(star, 2);
    await take(full, 4);
    const starGot = star.map((m) => [m.subject, m.string()]);
    const fullGot = full.map((m) => [m.subject, m.string()]);
    eq(starGot, [["wc.a.x", "wc.a.x"], ["wc.z.x", "wc.z.x"]], "wc.*.x deliveries");
    eq(fullGot, [["wc.a.x", "wc.a.x"], ["wc.b.y", "wc.b.y"], ["wc.a.b.x", "wc.a.b.x"], ["wc.z.x", "wc.z.x"]],
      "wc.> deliveries");
    await nc.close();
  },

  async queue() {
    const N = 90;
    const members = await Promise.all([0, 1, 2].map(() => connect(OPTS)));
    const seen = members.map(() => []);
    members.forEach((nc, i) => nc.subscribe("q.job", { queue: "workers", callback: (_, m) => seen[i].push(m.string()) }));
    await Promise.all(members.map((nc) => nc.flush()));
    const pub = await connect(OPTS);
    for (let i = 0; i < N; i++) pub.publish("q.job", enc.encode(String(i)));
    await pub.flush();
    const total = () => seen.reduce((a, s) => a + s.length, 0);
    await until(() => total() >= N, `${N} queue deliveries (got ${total()})`);
    await sleep(200); // a duplicate would arrive within this grace period
    const all = seen.flat().map(Number).sort((a, b) => a - b);
    eq(all, [...Array(N).keys()], "union of queue deliveries");
    const used = seen.filter((s) => s.length > 0).length;
    check(used >= 2, `only ${used} queue member received messages: ${seen.map((s) => s.length)}`);
    await Promise.all([...members, pub].map((nc) => nc.close()));
  },

  async request() {
    const svc = await connect(OPTS);
    svc.subscribe("svc.echo", { callback: (_, m) => m.respond(enc.encode(`echo:${m.string()}`)) });
    await svc.flush();
    const nc = await connect(OPTS);
    for (let i = 0; i < 5; i++) {
      const r = await nc.request("svc.echo", enc.encode(`ping-${i}`), { timeout: 2000 });
      eq(r.string(), `echo:ping-${i}`, `reply ${i}`);
    }
    await Promise.all([svc.close(), nc.close()]);
  },

  async headers() {
    const nc = await connect(OPTS);
    const sub = collect(nc, "interop.headers");
    const h = headers();
    h.set("X-Interop-Key", "value one");
    h.set("X-Interop-Colon", "a:b c");
    h.append("X-Interop-Multi", "first");
    h.append("X-Interop-Multi", "second");
    nc.publish("interop.headers", enc.encode("body"), { headers: h });
    nc.publish("interop.headers", new Uint8Array(0), { headers: h });
    const got = await take(sub, 2);
    eq(got.map((m) => m.string()), ["body", ""], "payloads");
    for (const m of got) {
      check(m.headers !== undefined, "message arrived without headers");
      eq(m.headers.get("X-Interop-Key"), "value one", "X-Interop-Key");
      eq(m.headers.get("X-Interop-Colon"), "a:b c", "X-Interop-Colon");
      eq(m.headers.values("X-Interop-Multi"), ["first", "second"], "X-Interop-Multi");
    }
    await nc.close();
  },

  async no_responders() {
    const nc = await connect(OPTS);
    const t0 = Date.now();
    let err = null;
    try {
      await nc.request("nobody.home", enc.encode("?"), { timeout: 3000 });
    } catch (e) {
      err = e;
    }
    const elapsed = Date.now() - t0;
    check(err !== null, "request to a subject without subscribers succeeded");
    eq(err.code, ErrorCode.NoResponders, `error code (${err.message})`);
    check(elapsed < 1000, `no-responders took ${elapsed} ms`);
    await nc.close();
  },

  async autounsub() {
    const nc = await connect(OPTS);
    const sub = nc.subscribe("interop.max", { max: 3 });
    const marker = collect(nc, "interop.max.done");
    for (let i = 0; i < 10; i++) nc.publish("interop.max", enc.encode(String(i)));
    nc.publish("interop.max.done");
    await take(marker, 1);
    const got = [];
    for await (const m of sub) got.push(m.string());
    eq(got, ["0", "1", "2"], "messages before auto-unsubscribe");
    check(sub.isClosed(), "subscription not closed after max");
    // The server must stop delivering too: only 3 + the marker reached the connection.
    eq(nc.stats().inMsgs, 4, "messages received by the connection");
    await nc.close();
  },

  async reconnect() {
    let reconnected = false;
    const nc = await connect(OPTS);
    (async () => {
      for await (const s of nc.status()) if (s.type === "reconnect") reconnected = true;
    })();
    const sub = collect(nc, "interop.reconnect");
    nc.publish("interop.reconnect", enc.encode("before"));
    eq((await take(sub, 1))[0].string(), "before", "message before restart");
    const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
    console.log("RESTART");
    eq((await lines.next()).value, "RESTARTED", "stdin reply");
    await until(() => reconnected, "reconnect event");
    await nc.flush();
    const other = await connect(OPTS);
    other.publish("interop.reconnect", enc.encode("after"));
    await other.flush();
    eq((await take(sub, 2))[1].string(), "after", "message after restart");
    eq(sub.length, 2, "messages on interop.reconnect");
    await Promise.all([nc.close(), other.close()]);
  },

  async drain() {
    const N = 20;
    const nc = await connect(OPTS);
    const handled = { a: [], b: [] };
    const consume = async (sub, key) => {
      for await (const m of sub) {
        await sleep(5); // slow consumer: messages queue up client-side
        handled[key].push(Number(m.string()));
      }
    };
    const subA = nc.subscribe("drain.a");
    const subB = nc.subscribe("drain.b");
    const doneA = consume(subA, "a");
    const doneB = consume(subB, "b");
    await nc.flush();
    const pub = await connect(OPTS);
    for (let i = 0; i < N; i++) {
      pub.publish("drain.a", enc.encode(String(i)));
      pub.publish("drain.b", enc.encode(String(i)));
    }
    await pub.flush();
    await until(() => handled.a.length > 0, "first message on drain.a");
    await subA.drain();
    await doneA;
    eq(handled.a, [...Array(N).keys()], "drain.a messages handled by subscription drain");
    check(subA.isClosed(), "subscription open after drain");
    await nc.drain();
    await doneB;
    eq(handled.b, [...Array(N).keys()], "drain.b messages handled by connection drain");
    check(nc.isClosed(), "connection open after drain");
    await pub.close();
  },

  async cluster() {
    // URL names two nodes of one cluster, "nats://A,nats://B"; each client talks to one of them.
    const [urlA, urlB] = url.split(",");
    const a = await connect({ ...OPTS, servers: urlA });
    const b = await connect({ ...OPTS, servers: urlB });
    const dec = new TextDecoder();
    const workers = [collect(a, "cluster.work", { queue: "w" }), collect(b, "cluster.work", { queue: "w" })];
    b.subscribe("cluster.svc", { callback: (err, m) => m.respond(enc.encode(`b:${dec.decode(m.data)}`)) });
    const heard = collect(b, "cluster.>"); // subscribed last: once a's node has this, it has all of b's
    await b.flush();
    await until(() => {
      a.publish("cluster.probe");
      return heard.length > 0;
    }, "interest of b's subscriptions on a's node", 10000);
    const N = 100;
    for (let i = 0; i < N; i++) a.publish("cluster.data", enc.encode(String(i)));
    await until(() => heard.filter((m) => m.subject === "cluster.data").length >= N, "data from a on b");
    for (let i = 0; i < 2 * N; i++) (i % 2 ? a : b).publish("cluster.work", enc.encode(String(i)));
    await until(() => workers[0].length + workers[1].length >= 2 * N, "queue group deliveries");
    const reply = await a.request("cluster.svc", enc.encode("ping"), { timeout: 5000 });
    eq(dec.decode(reply.data), "b:ping", "reply from the other node");
    try {
      await a.request("nobody.home", enc.encode(""), { timeout: 5000 });
      check(false, "request nobody listens to was answered");
    } catch (e) {
      eq(e.code, ErrorCode.NoResponders, "error of a request nobody in the cluster listens to");
    }
    await sleep(200); // nothing late: no duplicates
    const data = heard.filter((m) => m.subject === "cluster.data").map((m) => dec.decode(m.data));
    eq(data, [...Array(N).keys()].map(String), "each message once, in order, on the other node");
    const work = [...workers[0], ...workers[1]].map((m) => Number(dec.decode(m.data))).sort((x, y) => x - y);
    eq(work, [...Array(2 * N).keys()], "each queue message once across the cluster");
    await a.close();
    await b.close();
  },
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
try {
  await run();
  process.exit(0);
} catch (e) {
  console.error(`${scenario} FAILED: ${e instanceof Failure ? e.message : e.stack || e}`);
  process.exit(1);
}
