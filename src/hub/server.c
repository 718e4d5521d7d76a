/*
 * server.c — moatd's hub as a whole: its workers, the state they share, and
 * the signals.
 *
 * hub_server_new moves stored sessions to the worker that owns them
 * (store_split.c), opens the telemetry writer (ingest.c, which also answers
 * services' queries, query.c), makes the workers (worker.c: each loads its
 * own store file), starts the monitor (watch.c), and last binds each
 * worker's listener on the shared port. They stop in the other order: the
 * workers, then the threads that post to their inboxes, the monitor last
 * of all. Worker 0 runs on the calling thread and handles the signals:
 * SIGTERM/SIGINT stop every worker (each drains its connections), SIGHUP
 * re-reads the configuration and the registry and passes them on.
 */
/* sched_getaffinity and CPU_COUNT are GNU extensions. */
#define _GNU_SOURCE
#include "server.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hub_int.h"
#include "log.h"

uint64_t hub_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* `workers = 0`: one per core this process may run on (taskset counts). */
static unsigned worker_count(unsigned configured)
{
    unsigned n = configured;
    if (n == 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        n = sched_getaffinity(0, sizeof(set), &set) == 0 ? (unsigned)CPU_COUNT(&set) : 1;
    }
    if (n < 1)
        n = 1;
    if (n > STORE_SPLIT_MAX)
        n = STORE_SPLIT_MAX;
    return n;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    hub_worker *w0 = arg;
    hub_server *hub = w0->hub;
    (void)what;
    if (sig == SIGHUP) {
        log_msg(LOG_INFO, NULL, "SIGHUP: re-reading the configuration and the registry");
        hub_reload(w0);
        return;
    }
    if (atomic_exchange(&hub->stopping, true))
        return;
    log_msg(LOG_INFO, NULL, "%s: stopping: closing %zu connections",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", atomic_load(&hub->nconns));
    for (unsigned k = 0; k < hub->nworkers; k++)
        worker_control(&hub->workers[k], RELAY_STOP, NULL);
}

/* The telemetry writer's commits, for the store_failure alert. */
static void telemetry_health(void *ctx, bool ok, const char *detail)
{
    hub_server *hub = ctx;
    hub_store_state(hub, HUB_STORE_TELEMETRY, ok, detail);
}

/* A query's answer (query thread): to the requesting session only, on the
 * worker that owns it. */
static void query_answer(void *ctx, unsigned worker, codec_bytes client_id,
                         codec_bytes response_topic, codec_bytes correlation, codec_bytes payload)
{
    hub_server *hub = ctx;
    hub_message m = {.topic = response_topic,
                     .payload = payload,
                     .qos = 1,
                     .correlation = correlation,
                     .to = client_id};
    if (!hub_post(hub, (int)worker, &m))
        log_msg(LOG_ERROR, NULL, "a telemetry query's answer was lost: out of memory");
}

hub_server *hub_server_new(const hub_config *cfg, const hub_server_opts *opts, char *err,
                           size_t errlen)
{
    hub_server *hub = calloc(1, sizeof(*hub));
    if (!hub) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    hub->cfg = *cfg;
    if (opts)
        hub->opts = *opts;
    hub->nworkers = worker_count(cfg->workers);
    if (pthread_mutex_init(&hub->ips_mu, NULL) != 0) {
        snprintf(err, errlen, "pthread_mutex_init failed");
        free(hub);
        return NULL;
    }
    hub->ips_mu_ready = true;
    if (!hmap_init(&hub->ips)) {
        snprintf(err, errlen, "cannot initialise libsodium");
        goto fail;
    }
    hub->shares = shares_new();
    hub->workers = calloc(hub->nworkers, sizeof(*hub->workers));
    if (!hub->shares || !hub->workers) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (unsigned k = 0; k < hub->nworkers; k++)
        hub->workers[k].inbox.efd = -1;

    uint64_t max_id = 0;
    size_t moved = 0;
    if (!store_split(cfg->data_dir, hub->nworkers, &max_id, &moved, err, errlen))
        goto fail;
    if (moved)
        log_msg(LOG_INFO, NULL, "%zu stored sessions moved to the store of their worker (%u)",
                moved, hub->nworkers);
    atomic_store(&hub->ids, max_id);

    if (cfg->store_telemetry && !(hub->ingest = ingest_new(cfg->data_dir, err, errlen)))
        goto fail;
    if (hub->ingest) {
        ingest_set_watch(hub->ingest, telemetry_health, hub);
        if (!(hub->query = query_new(query_answer, hub, ingest_wake, hub->ingest))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        ingest_set_queries(hub->ingest, hub->query);
    }
    for (unsigned k = 0; k < hub->nworkers; k++)
        if (!worker_init(&hub->workers[k], hub, k, err, errlen))
            goto fail;
    if (hub->ingest) {
        relay_inbox *inboxes[STORE_SPLIT_MAX];
        for (unsigned k = 0; k < hub->nworkers; k++)
            inboxes[k] = &hub->workers[k].inbox;
        ingest_set_workers(hub->ingest, inboxes, hub->nworkers);
    }
    worker_seed_retained(hub);
    /* The monitor before the listeners: once the port accepts, the hub is
     * up (tests and supervisors wait for that), and its first heartbeat is
     * on its way. */
    if (!watch_start(hub, err, errlen))
        goto fail;
    for (unsigned k = 0; k < hub->nworkers; k++)
        if (!worker_listen(&hub->workers[k], err, errlen))
            goto fail;

    struct event_base *base0 = hub->workers[0].base;
    hub->sig_term = evsignal_new(base0, SIGTERM, on_signal, &hub->workers[0]);
    hub->sig_int = evsignal_new(base0, SIGINT, on_signal, &hub->workers[0]);
    hub->sig_hup = evsignal_new(base0, SIGHUP, on_signal, &hub->workers[0]);
    if (!hub->sig_term || !hub->sig_int || !hub->sig_hup) {
        snprintf(err, errlen, "libevent: out of memory");
        goto fail;
    }
    event_add(hub->sig_term, NULL);
    event_add(hub->sig_int, NULL);
    event_add(hub->sig_hup, NULL);
    return hub;
fail:
    hub_server_free(hub);
    return NULL;
}

uint16_t hub_server_port(const hub_server *hub)
{
    return hub->port;
}

static void *worker_thread(void *arg)
{
    hub_worker *w = arg;
    (void)worker_run(w);
    return NULL;
}

int hub_server_run(hub_server *hub)
{
    log_msg(LOG_INFO, NULL, "listening on %s:%u (mutual TLS %s, %u worker%s)", hub->cfg.listen_host,
            hub->port, hub->cfg.tls_min_version == 12 ? "1.2 and 1.3" : "1.3", hub->nworkers,
            hub->nworkers == 1 ? "" : "s");
    /* The signals are worker 0's (this thread's): the others block them. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = 0;
    if (hub->ingest && !ingest_start(hub->ingest)) {
        log_msg(LOG_ERROR, NULL, "cannot start the telemetry writer");
        rc = 1;
    }
    for (unsigned k = 1; k < hub->nworkers && !rc; k++) {
        int e = pthread_create(&hub->workers[k].thread, NULL, worker_thread, &hub->workers[k]);
        if (e != 0) {
            log_msg(LOG_ERROR, NULL, "cannot start worker %u: %s", k, strerror(e));
            rc = 1;
            break;
        }
        hub->workers[k].thread_started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        atomic_store(&hub->stopping, true);
        for (unsigned k = 0; k < hub->nworkers; k++)
            worker_control(&hub->workers[k], RELAY_STOP, NULL);
    }
    rc |= worker_run(&hub->workers[0]);
    for (unsigned k = 1; k < hub->nworkers; k++)
        if (hub->workers[k].thread_started) {
            pthread_join(hub->workers[k].thread, NULL);
            hub->workers[k].thread_started = false;
        }
    ingest_stop(hub->ingest); /* after the workers: it stores their last batches */
    watch_stop(hub);          /* last: it records what the others reported */
    log_msg(LOG_INFO, NULL, "stopped");
    return rc;
}

void hub_server_free(hub_server *hub)
{
    if (!hub)
        return;
    struct event *evs[] = {hub->sig_term, hub->sig_int, hub->sig_hup};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    /* The threads that post to the workers' inboxes go first. */
    ingest_stop(hub->ingest);
    watch_stop(hub);
    if (hub->workers) {
        for (unsigned k = 0; k < hub->nworkers; k++)
            worker_free(&hub->workers[k]);
        free(hub->workers);
    }
    ingest_free(hub->ingest);
    query_free(hub->query); /* after the thread that served it */
    if (hub->store_mu_ready)
        pthread_mutex_destroy(&hub->store_mu);
    size_t bucket = 0;
    hmap_entry *it = NULL, *e;
    while ((e = hmap_next(&hub->ips, &bucket, &it)))
        free(e->value);
    hmap_free(&hub->ips);
    shares_free(hub->shares);
    if (hub->ips_mu_ready)
        pthread_mutex_destroy(&hub->ips_mu);
    free(hub);
}
