/*
 * libnats (nats.c) driver for the interop suite: `scenarios SCENARIO URL`.
 * Exits 0 when the scenario's assertions hold; otherwise prints what failed and exits 1.
 * The reconnect scenario prints "RESTART" and waits for a line on stdin once the server is back.
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *scenario;
static const char *url;

#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (!(cond)) {                                            \
            fprintf(stderr, "%s FAILED (line %d): ", scenario, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                         \
            fputc('\n', stderr);                                  \
            exit(1);                                              \
        }                                                         \
    } while (0)

#define OK(call)                                                  \
    do {                                                          \
        natsStatus s_ = (call);                                   \
        CHECK(s_ == NATS_OK, "%s -> %s (%s)", #call,              \
              natsStatus_GetText(s_), nats_GetLastError(NULL));   \
    } while (0)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int reconnected;
static int closed;

static void on_reconnected(natsConnection *nc, void *closure) {
    pthread_mutex_lock(&mu);
    reconnected = 1;
    pthread_mutex_unlock(&mu);
}

static void on_closed(natsConnection *nc, void *closure) {
    pthread_mutex_lock(&mu);
    closed = 1;
    pthread_mutex_unlock(&mu);
}

static int read_flag(int *flag) {
    pthread_mutex_lock(&mu);
    int v = *flag;
    pthread_mutex_unlock(&mu);
    return v;
}

/* Waits up to 5 s for *flag to become non-zero. */
static void wait_flag(int *flag, const char *what) {
    int64_t deadline = nats_Now() + 5000;
    while (!read_flag(flag)) {
        CHECK(nats_Now() < deadline, "timed out waiting for %s", what);
        nats_Sleep(5);
    }
}

static natsConnection *conn(void) {
    natsOptions *opts;
    natsConnection *nc;
    OK(natsOptions_Create(&opts));
    OK(natsOptions_SetURL(opts, url));
    OK(natsOptions_SetReconnectWait(opts, 100));
    OK(natsOptions_SetMaxReconnect(opts, 100));
    OK(natsOptions_SetReconnectedCB(opts, on_reconnected, NULL));
    OK(natsOptions_SetClosedCB(opts, on_closed, NULL));
    OK(natsConnection_Connect(&nc, opts));
    natsOptions_Destroy(opts);
    return nc;
}

static natsMsg *next(natsSubscription *sub) {
    natsMsg *m = NULL;
    natsStatus s = natsSubscription_NextMsg(&m, sub, 5000);
    CHECK(s == NATS_OK, "no message on %s: %s", natsSubscription_GetSubject(sub), natsStatus_GetText(s));
    return m;
}

/* Asserts that msg has this subject and payload, then frees it. */
static void expect(natsMsg *m, const char *subject, const char *data, int len) {
    CHECK(strcmp(natsMsg_GetSubject(m), subject) == 0, "subject %s, expected %s", natsMsg_GetSubject(m), subject);
    CHECK(natsMsg_GetDataLength(m) == len && memcmp(natsMsg_GetData(m), data, len) == 0,
          "payload on %s: got %d bytes '%.*s', expected '%.*s'", subject, natsMsg_GetDataLength(m),
          natsMsg_GetDataLength(m) > 64 ? 64 : natsMsg_GetDataLength(m), natsMsg_GetData(m),
          len > 64 ? 64 : len, data);
    natsMsg_Destroy(m);
}

static void scn_connect(void) {
    char got[256];
    int64_t rtt;
    natsConnection *nc = conn();
    CHECK(natsConnection_GetMaxPayload(nc) > 0, "max_payload %lld", (long long)natsConnection_GetMaxPayload(nc));
    CHECK(natsConnection_HasHeaderSupport(nc) == NATS_OK, "server INFO does not announce headers");
    OK(natsConnection_GetConnectedUrl(nc, got, sizeof got));
    CHECK(strcmp(got, url) == 0, "connected url %s, expected %s", got, url);
    OK(natsConnection_GetRTT(nc, &rtt));
    natsConnection_Close(nc);
    CHECK(natsConnection_IsClosed(nc), "connection not closed after Close");
    natsConnection_Destroy(nc);
}

static void scn_pubsub(void) {
    static char big[64 * 1024];
    const char *payloads[] = {"hello", "", "x\r\ny", big};
    int lens[] = {5, 0, 4, sizeof big};
    natsConnection *nc = conn();
    natsSubscription *sub;
    natsMsg *m;
    for (size_t i = 0; i < sizeof big; i++) big[i] = (char)(i % 251);
    OK(natsConnection_SubscribeSync(&sub, nc, "interop.pubsub"));
    for (int i = 0; i < 4; i++) OK(natsConnection_Publish(nc, "interop.pubsub", payloads[i], lens[i]));
    for (int i = 0; i < 4; i++) expect(next(sub), "interop.pubsub", payloads[i], lens[i]);
    OK(natsConnection_Flush(nc));
    CHECK(natsSubscription_NextMsg(&m, sub, 100) == NATS_TIMEOUT, "unexpected extra message");
    natsConnection_Destroy(nc);
}

static void scn_wildcard(void) {
    const char *subjects[] = {"wc.a.x", "wc.b.y", "wc.a.b.x", "wc", "wcx.a.x", "wc.z.x"};
    natsConnection *nc = conn();
    natsSubscription *star, *full;
    OK(natsConnection_SubscribeSync(&star, nc, "wc.*.x"));
    OK(natsConnection_SubscribeSync(&full, nc, "wc.>"));
    for (int i = 0; i < 6; i++) OK(natsConnection_PublishString(nc, subjects[i], subjects[i]));
    /* wc.z.x matches both and is published last, so any stray delivery would come before it. */
    expect(next(star), "wc.a.x", "wc.a.x", 6);
    expect(next(star), "wc.z.x", "wc.z.x", 6);
    expect(next(full), "wc.a.x", "wc.a.x", 6);
    expect(next(full), "wc.b.y", "wc.b.y", 6);
    expect(next(full), "wc.a.b.x", "wc.a.b.x", 8);
    expect(next(full), "wc.z.x", "wc.z.x", 6);
    natsConnection_Destroy(nc);
}

static void scn_queue(void) {
    enum { N = 90, M = 3 };
    natsConnection *members[M], *pub;
    natsSubscription *subs[M];
    int seen[N] = {0}, per_member[M] = {0}, total = 0, used = 0;
    char buf[16];
    for (int i = 0; i < M; i++) {
        members[i] = conn();
        OK(natsConnection_QueueSubscribeSync(&subs[i], members[i], "q.job", "workers"));
        OK(natsConnection_Flush(members[i]));
    }
    pub = conn();
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof buf, "%d", i);
        OK(natsConnection_PublishString(pub, "q.job", buf));
    }
    OK(natsConnection_Flush(pub));
    int64_t deadline = nats_Now() + 5000;
    while (total < N && nats_Now() < deadline) {
        for (int i = 0; i < M; i++) {
            natsMsg *m;
            while (natsSubscription_NextMsg(&m, subs[i], 10) == NATS_OK) {
                int v = atoi(natsMsg_GetData(m));
                CHECK(v >= 0 && v < N, "bad payload %s", natsMsg_GetData(m));
                seen[v]++;
                per_member[i]++;
                total++;
                natsMsg_Destroy(m);
            }
        }
    }
    nats_Sleep(200); /* a duplicate would arrive within this grace period */
    for (int i = 0; i < M; i++) {
        uint64_t queued = 0;
        OK(natsSubscription_QueuedMsgs(subs[i], &queued));
        CHECK(queued == 0, "member %d got %llu extra messages", i, (unsigned long long)queued);
        used += per_member[i] > 0;
    }
    for (int v = 0; v < N; v++) CHECK(seen[v] == 1, "message %d delivered %d times", v, seen[v]);
    CHECK(used >= 2, "only %d queue member received messages (%d/%d/%d)", used, per_member[0], per_member[1],
          per_member[2]);
    for (int i = 0; i < M; i++) natsConnection_Destroy(members[i]);
    natsConnection_Destroy(pub);
}

static void echo(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure) {
    char buf[128];
    snprintf(buf, sizeof buf, "echo:%.*s", natsMsg_GetDataLength(m), natsMsg_GetData(m));
    natsConnection_PublishString(nc, natsMsg_GetReply(m), buf);
    natsMsg_Destroy(m);
}

static void scn_request(void) {
    natsConnection *svc = conn(), *nc;
    natsSubscription *sub;
    char req[32], want[64];
    OK(natsConnection_Subscribe(&sub, svc, "svc.echo", echo, NULL));
    OK(natsConnection_Flush(svc));
    nc = conn();
    for (int i = 0; i < 5; i++) {
        natsMsg *reply;
        snprintf(req, sizeof req, "ping-%d", i);
        snprintf(want, sizeof want, "echo:ping-%d", i);
        OK(natsConnection_RequestString(&reply, nc, "svc.echo", req, 2000));
        CHECK(natsMsg_GetDataLength(reply) == (int)strlen(want) && memcmp(natsMsg_GetData(reply), want, strlen(want)) == 0,
              "reply %d: '%.*s'", i, natsMsg_GetDataLength(reply), natsMsg_GetData(reply));
        natsMsg_Destroy(reply);
    }
    natsConnection_Destroy(nc);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(svc);
}

static void check_headers(natsMsg *m) {
    const char *v;
    const char **values;
    int count;
    OK(natsMsgHeader_Get(m, "X-Interop-Key", &v));
    CHECK(strcmp(v, "value one") == 0, "X-Interop-Key '%s'", v);
    OK(natsMsgHeader_Get(m, "X-Interop-Colon", &v));
    CHECK(strcmp(v, "a:b c") == 0, "X-Interop-Colon '%s'", v);
    OK(natsMsgHeader_Values(m, "X-Interop-Multi", &values, &count));
    CHECK(count == 2 && strcmp(values[0], "first") == 0 && strcmp(values[1], "second") == 0,
          "X-Interop-Multi has %d values, first '%s'", count, count ? values[0] : "");
    free((void *)values);
}

static void scn_headers(void) {
    const char *bodies[] = {"body", ""};
    natsConnection *nc = conn();
    natsSubscription *sub;
    OK(natsConnection_SubscribeSync(&sub, nc, "interop.headers"));
    for (int i = 0; i < 2; i++) {
        natsMsg *m;
        OK(natsMsg_Create(&m, "interop.headers", NULL, bodies[i], (int)strlen(bodies[i])));
        OK(natsMsgHeader_Set(m, "X-Interop-Key", "value one"));
        OK(natsMsgHeader_Set(m, "X-Interop-Colon", "a:b c"));
        OK(natsMsgHeader_Add(m, "X-Interop-Multi", "first"));
        OK(natsMsgHeader_Add(m, "X-Interop-Multi", "second"));
        OK(natsConnection_PublishMsg(nc, m));
        natsMsg_Destroy(m);
    }
    for (int i = 0; i < 2; i++) {
        natsMsg *m = next(sub);
        check_headers(m);
        expect(m, "interop.headers", bodies[i], (int)strlen(bodies[i]));
    }
    natsConnection_Destroy(nc);
}

static void scn_no_responders(void) {
    natsConnection *nc = conn();
    natsMsg *reply = NULL;
    int64_t t0 = nats_Now();
    natsStatus s = natsConnection_RequestString(&reply, nc, "nobody.home", "?", 3000);
    int64_t elapsed = nats_Now() - t0;
    CHECK(s == NATS_NO_RESPONDERS, "request returned %s, expected NATS_NO_RESPONDERS", natsStatus_GetText(s));
    CHECK(elapsed < 1000, "no-responders took %lld ms", (long long)elapsed);
    natsConnection_Destroy(nc);
}

static void scn_autounsub(void) {
    natsConnection *nc = conn();
    natsSubscription *sub, *marker;
    natsStatistics *stats;
    uint64_t in_msgs;
    natsMsg *m;
    char buf[8];
    OK(natsConnection_SubscribeSync(&sub, nc, "interop.max"));
    OK(natsSubscription_AutoUnsubscribe(sub, 3));
    OK(natsConnection_SubscribeSync(&marker, nc, "interop.max.done"));
    for (int i = 0; i < 10; i++) {
        snprintf(buf, sizeof buf, "%d", i);
        OK(natsConnection_PublishString(nc, "interop.max", buf));
    }
    OK(natsConnection_PublishString(nc, "interop.max.done", "done"));
    expect(next(marker), "interop.max.done", "done", 4);
    expect(next(sub), "interop.max", "0", 1);
    expect(next(sub), "interop.max", "1", 1);
    expect(next(sub), "interop.max", "2", 1);
    natsStatus s = natsSubscription_NextMsg(&m, sub, 100);
    CHECK(s != NATS_OK, "got a 4th message after auto-unsubscribe at 3");
    /* The server must stop delivering too: only 3 + the marker reached the connection. */
    OK(natsStatistics_Create(&stats));
    OK(natsConnection_GetStats(nc, stats));
    OK(natsStatistics_GetCounts(stats, &in_msgs, NULL, NULL, NULL, NULL));
    CHECK(in_msgs == 4, "connection received %llu messages, expected 4", (unsigned long long)in_msgs);
    natsStatistics_Destroy(stats);
    natsConnection_Destroy(nc);
}

static void scn_reconnect(void) {
    natsConnection *nc = conn(), *other;
    natsSubscription *sub;
    char line[64] = "";
    OK(natsConnection_SubscribeSync(&sub, nc, "interop.reconnect"));
    OK(natsConnection_PublishString(nc, "interop.reconnect", "before"));
    expect(next(sub), "interop.reconnect", "before", 6);
    printf("RESTART\n");
    fflush(stdout);
    CHECK(fgets(line, sizeof line, stdin) && strcmp(line, "RESTARTED\n") == 0, "stdin reply '%s'", line);
    wait_flag(&reconnected, "reconnected callback");
    OK(natsConnection_Flush(nc));
    other = conn();
    OK(natsConnection_PublishString(other, "interop.reconnect", "after"));
    OK(natsConnection_Flush(other));
    expect(next(sub), "interop.reconnect", "after", 5);
    natsConnection_Destroy(other);
    natsConnection_Destroy(nc);
}

enum { DRAIN_N = 20 };
struct handled {
    int vals[DRAIN_N * 2];
    int count;
};

static void slow_handler(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure) {
    struct handled *h = closure;
    nats_Sleep(5); /* slow consumer: messages queue up client-side */
    pthread_mutex_lock(&mu);
    if (h->count < DRAIN_N * 2) h->vals[h->count++] = atoi(natsMsg_GetData(m));
    pthread_mutex_unlock(&mu);
    natsMsg_Destroy(m);
}

static void expect_all(struct handled *h, const char *what) {
    pthread_mutex_lock(&mu);
    CHECK(h->count == DRAIN_N, "%s: handled %d messages, expected %d", what, h->count, DRAIN_N);
    for (int i = 0; i < DRAIN_N; i++) CHECK(h->vals[i] == i, "%s: message %d was %d", what, i, h->vals[i]);
    pthread_mutex_unlock(&mu);
}

static void scn_drain(void) {
    static struct handled a, b;
    natsConnection *nc = conn(), *pub;
    natsSubscription *sub_a, *sub_b;
    char buf[8];
    OK(natsConnection_Subscribe(&sub_a, nc, "drain.a", slow_handler, &a));
    OK(natsConnection_Subscribe(&sub_b, nc, "drain.b", slow_handler, &b));
    OK(natsConnection_Flush(nc));
    pub = conn();
    for (int i = 0; i < DRAIN_N; i++) {
        snprintf(buf, sizeof buf, "%d", i);
        OK(natsConnection_PublishString(pub, "drain.a", buf));
        OK(natsConnection_PublishString(pub, "drain.b", buf));
    }
    OK(natsConnection_Flush(pub));
    wait_flag(&a.count, "first message on drain.a");
    OK(natsSubscription_Drain(sub_a));
    OK(natsSubscription_WaitForDrainCompletion(sub_a, 5000));
    OK(natsSubscription_DrainCompletionStatus(sub_a));
    expect_all(&a, "drain.a (subscription drain)");
    /* Drain completion is signalled just before the library removes the subscription. */
    int64_t deadline = nats_Now() + 1000;
    while (natsSubscription_IsValid(sub_a)) {
        CHECK(nats_Now() < deadline, "subscription still valid after drain");
        nats_Sleep(5);
    }
    OK(natsConnection_Drain(nc));
    wait_flag(&closed, "connection closed by drain");
    expect_all(&b, "drain.b (connection drain)");
    CHECK(natsConnection_IsClosed(nc), "connection open after drain");
    natsSubscription_Destroy(sub_a);
    natsSubscription_Destroy(sub_b);
    natsConnection_Destroy(nc);
    natsConnection_Destroy(pub);
}

static const struct {
    const char *name;
    void (*run)(void);
} scenarios[] = {
    {"connect", scn_connect},     {"pubsub", scn_pubsub},   {"wildcard", scn_wildcard},
    {"queue", scn_queue},         {"request", scn_request}, {"headers", scn_headers},
    {"no_responders", scn_no_responders}, {"autounsub", scn_autounsub},
    {"reconnect", scn_reconnect}, {"drain", scn_drain},
};

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SCENARIO URL\n", argv[0]);
        return 2;
    }
    scenario = argv[1];
    url = argv[2];
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        if (strcmp(scenarios[i].name, scenario) == 0) {
            scenarios[i].run();
            return 0;
        }
    }
    fprintf(stderr, "unknown scenario %s\n", scenario);
    return 2;
}
